"""The tc ITR's two ways of making room for the outer headers.

bpf_skb_change_head (cheap) serves packets whose TCP/UDP checksum is
complete; bpf_skb_adjust_room with the ENCAP flags serves the rest, above
all CHECKSUM_PARTIAL packets, whose checksum field holds only the
pseudo-header sum and which a NIC must finish at the inner headers' offsets
(which only adjust_room records). The decision is lisp_l4_csum_complete
(bpf/lisp_parse.h): checked here against the kernel's convention for
CHECKSUM_PARTIAL, computed independently in Python. And whichever way a
packet takes, the bytes on the wire are the same.
"""
from __future__ import annotations

import ipaddress
import struct
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lispctl.datapath.testrun import TC_ACT_REDIRECT, run_prog, skb_ctx
from lispctl.mapping.types import EidPrefix, Rloc
from tests.datapath import packets as P
from tests.datapath.test_encap_decap import CASES, itr_frame

ip = ipaddress.ip_address

PROBE = b"""
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/udp.h>
#include <uapi/linux/tcp.h>
#include "lisp_parse.h"
int csum_complete_probe(struct __sk_buff *skb)
{
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end)
        return 2;
    struct lisp_flow f = {};
    if (lisp_parse_ip(eth + 1, end, eth->h_proto, &f) < 0)
        return 3;
    return lisp_l4_csum_complete(&f);
}
"""


@pytest.fixture(scope="module")
def probe(lab):
    from bcc import BPF

    from lispctl.datapath.loader import BPF_DIR
    b = BPF(text=PROBE, cflags=[f"-I{BPF_DIR}", "-Wno-unused-function"])
    try:
        yield b.load_func(b"csum_complete_probe", BPF.SCHED_CLS).fd
    finally:
        b.cleanup()


def _partial_seed(src, dst, proto: int, l4len: int) -> int:
    """What the stack leaves in the checksum field of a CHECKSUM_PARTIAL
    packet: ~csum_tcpudp_magic(src, dst, len, proto, 0), the folded
    pseudo-header sum (udp4_hwcsum, tcp_v4_send_check, and their IPv6 twins)."""
    return ~P.csum(P._pseudo(src, dst, proto, l4len)) & 0xFFFF


def _packet(v: int, proto: int, payload: bytes, check: int | None, **kw) -> bytes:
    """An inner IP packet with a valid L4 checksum, or with `check` in its field."""
    src, dst = ("10.1.0.10", "10.2.0.5") if v == 4 else ("fd00:1::10", "fd00:2::5")
    l4 = P.udp(src, dst, 1234, 80, payload) if proto == P.UDP else P.tcp(src, dst, 1234, 80, payload)
    if check is not None:
        off = 6 if proto == P.UDP else 16
        l4 = l4[:off] + struct.pack("!H", check) + l4[off + 2:]
    return P.ipv4(src, dst, l4, proto=proto, **kw) if v == 4 else P.ipv6(src, dst, l4, nh=proto, **kw)


def _l4_check(pkt: bytes, proto: int) -> int:
    hl = (pkt[0] & 0xF) * 4 if pkt[0] >> 4 == 4 else 40
    return struct.unpack("!H", pkt[hl + (6 if proto == P.UDP else 16):][:2])[0]


def _seed_of(pkt: bytes, v: int, proto: int) -> int:
    src, dst = (pkt[12:16], pkt[16:20]) if v == 4 else (pkt[8:24], pkt[24:40])
    return _partial_seed(ip(src), ip(dst), proto, len(pkt) - (20 if v == 4 else 40))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(v=st.sampled_from([4, 6]), proto=st.sampled_from([P.UDP, P.TCP]),
       payload=st.binary(min_size=0, max_size=200), partial=st.booleans())
def test_partial_checksums_take_adjust_room(probe, v, proto, payload, partial):
    complete = _packet(v, proto, payload, None)
    seed = _seed_of(complete, v, proto)
    pkt = _packet(v, proto, payload, seed) if partial else complete
    got = run_prog(probe, itr_frame(pkt)).retval
    # a complete checksum that happens to equal the seed goes the general way too
    assert got == (0 if partial or _l4_check(complete, proto) == seed else 1)


def test_what_is_never_pushed(probe):
    """Only TCP/UDP with a readable header: other protocols, IPv4 options and
    fragments take adjust_room whatever their bytes."""
    icmp = struct.pack("!BBHHH", 8, 0, 0, 1, 1) + b"ping"
    icmp = icmp[:2] + struct.pack("!H", P.csum(icmp)) + icmp[4:]
    assert run_prog(probe, itr_frame(P.ipv4("10.1.0.10", "10.2.0.5", icmp, proto=P.ICMP))).retval == 0
    good = _packet(4, P.UDP, b"x" * 40, None)
    assert run_prog(probe, itr_frame(good)).retval == 1
    # the same datagram behind an IPv4 option (NOP x4)
    opt = bytes([0x46]) + good[1:2] + struct.pack("!H", len(good) + 4) + good[4:10] + b"\0\0" + good[12:20] + \
        b"\x01" * 4 + good[20:]
    opt = opt[:10] + struct.pack("!H", P.csum(opt[:24])) + opt[12:]
    assert run_prog(probe, itr_frame(opt)).retval == 0
    frag = good[:6] + struct.pack("!H", 0x2000) + good[8:10] + b"\0\0" + good[12:]   # MF set
    frag = frag[:10] + struct.pack("!H", P.csum(frag[:20])) + frag[12:]
    assert run_prog(probe, itr_frame(frag)).retval == 0


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("proto", [P.UDP, P.TCP])
def test_both_ways_write_the_same_bytes(dp, lab, case, proto):
    """The same packet with a complete checksum and as CHECKSUM_PARTIAL leaves it:
    identical frames but for the nonce (and the inner checksum field itself)."""
    src, dst, prefix, rloc, _local = CASES[case]
    dp.set_mapping(EidPrefix.parse(prefix), [Rloc(ip(rloc))])
    v = ip(src).version
    outs = []
    for partial in (False, True):
        l4 = P.udp(src, dst, 1234, 80, b"y" * 77) if proto == P.UDP else P.tcp(src, dst, 1234, 80, b"y" * 77)
        if partial:
            off = 6 if proto == P.UDP else 16
            l4 = l4[:off] + struct.pack("!H", _partial_seed(ip(src), ip(dst), proto, len(l4))) + l4[off + 2:]
        inner = P.ipv4(src, dst, l4, proto=proto, ttl=9) if v == 4 else P.ipv6(src, dst, l4, nh=proto, hlim=9)
        res = run_prog(dp.prog_fd("lisp_itr_ingress"), itr_frame(inner), ctx=skb_ctx(ifindex=lab.eid_if))
        assert res.retval == TC_ACT_REDIRECT
        o = P.split_encap(res.data)
        assert o.inner == P.hop(inner)
        outs.append(res.data)
    a, b = (bytearray(x) for x in outs)
    hl = 14 + (20 if ip(rloc).version == 4 else 40) + 8        # the nonce: LISP header bytes 1-3
    for x in (a, b):
        x[hl + 1:hl + 4] = b"\0\0\0"
    if ip(rloc).version == 6:       # the outer UDP checksum covers the nonce and the inner checksum
        for x in (a, b):
            x[hl - 2:hl] = b"\0\0"
    inner_off = hl + 8 + (20 if v == 4 else 40) + (6 if proto == P.UDP else 16)
    for x in (a, b):
        x[inner_off:inner_off + 2] = b"\0\0"
    assert a == b


def test_consecutive_nonces_differ(dp, lab):
    """RFC 9300 5.3: each data packet's nonce is random (the tc ITR's per-CPU
    generator): 256 packets of one flow, practically all different."""
    dp.set_mapping(EidPrefix.parse("10.2.0.0/16"), [Rloc(ip("192.0.2.2"))])
    frame = itr_frame(P.ip_packet("10.1.0.10", "10.2.0.5"))
    nonces = [P.split_encap(run_prog(dp.prog_fd("lisp_itr_ingress"), frame).data).nonce for _ in range(256)]
    assert len(set(nonces)) >= 250
    assert len({n >> 16 for n in nonces}) > 64 and len({n & 0xFF for n in nonces}) > 64


def _masked(frame: bytes) -> bytes:
    """Without the LISP nonce and, over IPv6, the UDP checksum covering it."""
    b = bytearray(frame)
    if len(b) > 14 + 40 + 12 and b[14] >> 4 in (4, 6):
        l4 = 14 + (20 if b[14] >> 4 == 4 else 40)
        b[l4 + 9:l4 + 12] = bytes(3)
        if b[14] >> 4 == 6:
            b[l4 + 6:l4 + 8] = bytes(2)
    return bytes(b)


@pytest.mark.parametrize("case", ["plain", "tcp", "ttl1", "padding", "partial", "6in4", "4in6", "6in6"])
def test_decided_destination_answered_like_its_first_packet(dp, lab, one_cpu, case):
    """The first packet to a destination goes through lisp_itr_route and
    lisp_itr_encap; once its flow-cache slot keeps the locator, the lookups'
    program encapsulates the common case itself (itr_fast) and hands
    everything else on. Either way the same answer, byte for byte."""
    key = {"6in4": "6in4", "4in6": "4in6", "6in6": "6in6"}.get(case, "4in4")
    src, dst, prefix, rloc, _local = CASES[key]
    dp.set_mapping(EidPrefix.parse(prefix), [Rloc(ip(rloc))])      # a new generation: the next packet is a first
    v = ip(src).version
    kw = {"ttl": 1} if case == "ttl1" else {}
    if v == 6:
        kw = {"hlim": kw["ttl"]} if kw else {}
    proto = P.TCP if case == "tcp" else P.UDP
    inner = P.ip_packet(src, dst, b"z" * 40, **kw) if proto == P.UDP else \
        (P.ipv4(src, dst, P.tcp(src, dst, 1234, 80, b"z" * 40), proto=P.TCP) if v == 4 else
         P.ipv6(src, dst, P.tcp(src, dst, 1234, 80, b"z" * 40), nh=P.TCP))
    if case == "partial":
        inner = _packet(v, P.UDP, b"z" * 40, _seed_of(_packet(v, P.UDP, b"z" * 40, None), v, P.UDP))
    frame = itr_frame(inner) + (bytes(18) if case == "padding" else b"")
    fd, ctx = dp.prog_fd("lisp_itr_ingress"), skb_ctx(ifindex=lab.eid_if)
    first = run_prog(fd, frame, ctx=ctx)
    again = []
    for _ in range(2):
        if case == "ttl1":
            time.sleep(0.02)        # past the per-CPU Time Exceeded limit (10 ms, LISP_ICMP_MIN_INTERVAL_NS)
        again.append(run_prog(fd, frame, ctx=ctx))
    assert first.retval in (TC_ACT_REDIRECT, 0, 2) and first.data
    for r in again:
        assert r.retval == first.retval
        assert _masked(r.data) == _masked(first.data)
