"""The benchmarks' bpf-forward baseline (bpf/bench_forward.c) loads and forwards.

`make bench` compares LISP against it; if it stopped loading, or silently
left forwarding to the stack, the comparison would measure something else.
One `dataplane` lab with plain EID routes: the forwarder on both xTRs must
carry pings across without the xTRs' IP stack forwarding anything, and its
tc and XDP programs must write the FIB's MACs and one less TTL, with a valid
IPv4 checksum.
"""
from __future__ import annotations

import ipaddress
import struct

import pytest

from lispctl.bench import forwarder as fw
from lispctl.lab import Lab, load
from lispctl.lab.references import setup_plain
from lispctl.lab.traffic import mac_of, ping_here
from tests.conftest import need_root
from tests.datapath.interrupt import sigterm_as_interrupt

XTRS = ("xtr1", "xtr2")
IFS = ("eid0", "rloc0")


@pytest.fixture(scope="module")
def lab():
    need_root()
    with sigterm_as_interrupt(), Lab(load("dataplane")) as lab:
        setup_plain(lab)
        for x in XTRS:
            fw.attach(lab, x, fw.TC_FORWARD, IFS)
        yield lab


def test_forwarder_carries_traffic_without_the_stack(lab):
    # first packets wait for neighbour resolution, which only the stack does
    for v in (4, 6):
        assert lab.call("hostA", ping_here, lab.addr("hostB", v), 1, 1.0) == 1
    before = {x: fw.stack_forwarded(lab, x) for x in XTRS}
    for v in (4, 6):
        assert lab.call("hostA", ping_here, lab.addr("hostB", v), 3, 1.0) == 3
    assert {x: fw.stack_forwarded(lab, x) for x in XTRS} == before
    # the same count does move when the stack forwards: the check above can fail
    fw.detach(lab, "xtr1", fw.TC_FORWARD, IFS)
    try:
        assert lab.call("hostA", ping_here, lab.addr("hostB", 4), 3, 1.0) == 3
        assert fw.stack_forwarded(lab, "xtr1") >= before["xtr1"] + 6   # 3 requests + 3 replies
    finally:
        fw.attach(lab, "xtr1", fw.TC_FORWARD, IFS)


def test_xdp_forwarder_carries_traffic_without_the_stack(lab):
    """bench_fwd_xdp as the xTRs' XDP program, in the throughput bench's XDP
    lab (its veth peers with GRO on, so they take redirected frames). The tc
    forwarder is off meanwhile: what XDP passed on would reach the stack."""
    from lispctl.bench.bench_throughput import setup_xdp_peers, xdp_programs_here
    for v in (4, 6):
        assert lab.call("hostA", ping_here, lab.addr("hostB", v), 1, 1.0) == 1   # neighbours resolved
    setup_xdp_peers(lab)
    for x in XTRS:
        fw.detach(lab, x, fw.TC_FORWARD, IFS)
        fw.attach(lab, x, fw.XDP_FORWARD, IFS)
    try:
        assert lab.call("xtr1", xdp_programs_here, IFS) == {i: fw.XDP_FORWARD for i in IFS}
        before = {x: fw.stack_forwarded(lab, x) for x in XTRS}
        for v in (4, 6):
            assert lab.call("hostA", ping_here, lab.addr("hostB", v), 3, 1.0) == 3
        assert {x: fw.stack_forwarded(lab, x) for x in XTRS} == before
    finally:
        for x in XTRS:
            fw.detach(lab, x, fw.XDP_FORWARD, IFS)
            fw.attach(lab, x, fw.TC_FORWARD, IFS)
    assert lab.call("xtr1", xdp_programs_here, IFS) == {i: "" for i in IFS}


def _csum(b: bytes) -> int:
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _run_both(fd_tc: int, fd_xdp: int, frame: bytes, ifindex: int) -> tuple:
    """In xtr1's namespace (test runs look routes up in the caller's)."""
    from lispctl.datapath.testrun import run_prog, skb_ctx, xdp_ctx
    t = run_prog(fd_tc, frame, ctx=skb_ctx(ifindex=ifindex))
    x = run_prog(fd_xdp, frame, ctx=xdp_ctx(len(frame), ifindex))
    return t.retval, t.data, x.retval, x.data


def test_programs_rewrite_macs_and_ttl(lab):
    from lispctl.datapath.testrun import TC_ACT_REDIRECT, XDP_REDIRECT
    assert lab.call("hostA", ping_here, lab.addr("hostB", 4), 1, 1.0) == 1   # neighbours resolved
    progs = fw.load()
    src, dst = lab.addr("hostA"), lab.addr("hostB")
    udp = struct.pack("!HHHH", 1234, 9, 8 + 18, 0) + bytes(18)
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0,
                    ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed)
    ip = h[:10] + struct.pack("!H", _csum(h)) + h[12:]
    eth_in = bytes.fromhex(mac_of(lab, "xtr1", "eid0").replace(":", "")) + \
        bytes.fromhex(mac_of(lab, "hostA", "eth0").replace(":", "")) + b"\x08\x00"
    frame = eth_in + ip + udp
    with lab.ipr("xtr1") as ipr:
        eid0 = ipr.link_lookup(ifname="eid0")[0]
    want_eth = bytes.fromhex(mac_of(lab, "router", "r1").replace(":", "") +
                             mac_of(lab, "xtr1", "rloc0").replace(":", "")) + b"\x08\x00"
    tc_rc, tc_out, xdp_rc, xdp_out = lab.call("xtr1", _run_both, progs.tc, progs.xdp, frame, eid0)
    assert (tc_rc, xdp_rc) == (TC_ACT_REDIRECT, XDP_REDIRECT)
    for out in (tc_out, xdp_out):
        assert out[:14] == want_eth
        assert out[14 + 8] == 63                    # TTL
        assert _csum(out[14:34]) == 0               # header checksum still valid
        assert out[34:] == udp
