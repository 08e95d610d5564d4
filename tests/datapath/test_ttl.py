"""A packet with TTL / hop limit 1 through the ITR: the router answers
Time Exceeded (issue 13 section 4), both families, though it has no route
to the destination EID (the stack would say "net unreachable").
The host reads the error from its socket (IP_RECVERR / IPV6_RECVERR)."""
from __future__ import annotations

import ipaddress
import select
import socket
import struct
import time

import pytest

from lispctl.mapping.types import EidPrefix, Rloc
from tests.datapath.test_checksum import INNER, NS_H, OUTER, _in_ns, topo  # noqa: F401

IP_RECVERR, IPV6_RECVERR = 11, 25
SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6 = 2, 3


def _send_and_read_error(dst: str, hops: int) -> tuple[int, int, int] | None:
    """(origin, ICMP type, code) of the error the stack queued, or None."""
    v6 = ":" in dst
    s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
    with s:
        if v6:
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, hops)
        else:
            s.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, hops)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            s.sendto(b"ttl", (dst, 33434))
            select.select([], [], [s], 0.3)
            try:
                _data, anc, _flags, _addr = s.recvmsg(512, 512, socket.MSG_ERRQUEUE)
            except BlockingIOError:
                continue
            except OSError:
                continue
            for _level, _kind, val in anc:
                errno_, origin, etype, ecode = struct.unpack("=IBBB", val[:7])
                return origin, etype, ecode
    return None


@pytest.mark.parametrize("fam", [4, 6])
def test_ttl_1_through_the_itr_gets_time_exceeded(dp, topo, fam):  # noqa: F811
    _host, _gw, dst, prefix = INNER[fam]
    rloc, _ = OUTER[fam]
    dp.set_mapping(EidPrefix.parse(prefix), [Rloc(ipaddress.ip_address(rloc))])
    dp.attach_eid_interface("ck0")
    dp.attach_rloc_interface("ck1")
    err = _in_ns(NS_H, _send_and_read_error, dst, 1)
    assert err is not None, "no ICMP error came back"
    origin, etype, ecode = err
    if fam == 4:
        assert (origin, etype, ecode) == (SO_EE_ORIGIN_ICMP, 11, 0)
    else:
        assert (origin, etype, ecode) == (SO_EE_ORIGIN_ICMP6, 3, 0)
    c = dp.counters()
    assert c.other["icmp_time_exceeded"] >= 1 and c.drops["ttl_expired"] >= 1 and c.encapsulated == 0
