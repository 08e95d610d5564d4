"""GSO super-packets through the real kernel path (not BPF_PROG_TEST_RUN:
test-run skbs carry gso_size but no gso_type, and bpf_skb_adjust_room refuses
such packets, so only a real GSO skb shows the encapsulation works).

A UDP socket with UDP_SEGMENT sends one 8-segment GSO packet out of eid0p;
it enters eid0, where lisp_itr_ingress encapsulates it whole and redirects
it out of rl0; a packet socket on rl0p, the far end, sees what left.
"""
from __future__ import annotations

import ipaddress
import socket
import struct
import time

import pytest

from lispctl.mapping.types import EidPrefix, Rloc
from tests.datapath.conftest import VIA_ITR as DST

UDP_SEGMENT = 103
SEG, NSEG = 1000, 8


def _capture_lisp(sock: socket.socket, want_bytes: int, timeout: float = 3.0) -> list[bytes]:
    frames, got = [], 0
    deadline = time.monotonic() + timeout
    while got < want_bytes and time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            fr = sock.recv(1 << 17)
        except TimeoutError:
            break
        et = struct.unpack("!H", fr[12:14])[0]
        off = 14 + (20 if et == 0x0800 else 40)
        if et in (0x0800, 0x86DD) and len(fr) > off + 16 and struct.unpack("!H", fr[off + 2:off + 4])[0] == 4341:
            frames.append(fr)
            inner = fr[off + 16:]
            got += len(inner) - 28
    return frames


@pytest.mark.parametrize("rloc", ["192.0.2.2", "2001:db8:1::2"])
def test_gso_super_packet_encapsulated_whole(dp, lab, via_itr, rloc):
    dp.set_path_mtu(1500)
    dp.set_mapping(EidPrefix.parse("10.2.0.0/16"), [Rloc(ipaddress.ip_address(rloc))])
    dp.attach_eid_interface("eid0")
    cap = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    cap.bind(("rl0p", 0))
    with cap, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_UDP, UDP_SEGMENT, SEG)
        s.sendto(b"g" * (SEG * NSEG), (DST, 9))
        frames = _capture_lisp(cap, SEG * NSEG)
    c = dp.counters()
    assert c.total_drops == 0, c.drops
    assert c.encapsulated == 1, "one GSO packet in, one encapsulation"
    assert frames, "nothing encapsulated left rl0"
    # kept whole: one outer frame far above the 1500-byte MTU, carrying all segments
    assert max(len(f) for f in frames) > 1500 + 14
    overhead = 36 if ":" not in rloc else 56
    assert sum(len(f) - 14 - overhead - 28 for f in frames) == SEG * NSEG
