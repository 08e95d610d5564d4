"""The XDP ETR (lisp_etr_xdp): exact output bytes through BPF_PROG_TEST_RUN,
the same verdicts as the tc ETR on the same input, and a real crossing with
the RLOC interface in mode="xdp"."""
from __future__ import annotations

import ipaddress
import random
import struct

import pytest

from lispctl.datapath.testrun import (TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, XDP_DROP, XDP_PASS,
                                      XDP_REDIRECT, run_prog, skb_ctx, xdp_ctx)
from lispctl.mapping.types import EidPrefix, Rloc
from tests.datapath import packets as P
from tests.datapath.conftest import EID_MAC, PEER_MAC, RLOC_MAC
from tests.datapath.test_encap_decap import CASES

ip = ipaddress.ip_address
E = EidPrefix.parse


def rloc_frame(l3: bytes, peer: str = "192.0.2.2") -> bytes:
    et = P.ETH_IP if l3[0] >> 4 == 4 else P.ETH_IP6
    return P.eth(P.mac(RLOC_MAC), P.mac(PEER_MAC[peer]), et) + l3


def xdp(dp, lab, frame: bytes):
    return run_prog(dp.prog_fd("lisp_etr_xdp"), frame, ctx=xdp_ctx(len(frame), lab.rl_if))


def tc(dp, lab, frame: bytes):
    return run_prog(dp.prog_fd("lisp_etr_ingress"), frame, ctx=skb_ctx(ifindex=lab.rl_if))


def decap_case(case: str, iid=None, inner_ttl: int = 50, outer_ttl: int = 64, payload: bytes = b"y" * 64):
    host, remote, _prefix, rloc, local = CASES[case]
    kw = {"ttl": inner_ttl} if ip(host).version == 4 else {"hlim": inner_ttl}
    inner = P.ip_packet(remote, host, payload, **kw)
    return inner, rloc_frame(P.lisp_packet(rloc, local, inner, iid=iid, ttl=outer_ttl), rloc)


def inner_eth(dmac: str, smac: str, inner: bytes) -> bytes:
    return P.eth(P.mac(dmac), P.mac(smac), P.ETH_IP if inner[0] >> 4 == 4 else P.ETH_IP6)


@pytest.fixture
def xdp_dp(dp, lab):
    """dp with the XDP ETR allowed to redirect into eid0 (as for a NIC)."""
    dp.set_xdp_redirect("eid0", True)
    return dp


# ---------- exact bytes ----------

@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("iid", [None, 0x10203])
def test_xdp_decapsulation_exact(xdp_dp, lab, case, iid):
    dp = xdp_dp
    if iid:
        dp.add_local_eid(E("10.1.0.0/16", iid))
        dp.add_local_eid(E("fd00:1::/32", iid))
    inner, frame = decap_case(case, iid)
    host = CASES[case][0]
    res = xdp(dp, lab, frame)
    assert res.retval == XDP_REDIRECT
    # redirected to the site: routed, TTL - 1
    assert res.data == inner_eth(PEER_MAC[host], EID_MAC, inner) + P.hop(inner)
    # byte for byte what the tc ETR makes of the same frame
    assert res.data == tc(dp, lab, frame).data
    c = dp.counters()
    assert c.decapsulated == 2 and c.other["xdp_decapsulated"] == 1 and c.other["xdp_to_stack"] == 0
    assert c.total_drops == 0


@pytest.mark.parametrize("case", sorted(CASES))
def test_xdp_passes_decapsulated_to_stack_without_redirect_target(dp, lab, case):
    # eid0 is a veth and not marked as an XDP target: the stack forwards, so
    # the frame stays addressed to the receiving interface
    inner, frame = decap_case(case)
    res = xdp(dp, lab, frame)
    assert res.retval == XDP_PASS
    assert res.data == frame[:12] + struct.pack("!H", P.ETH_IP if inner[0] >> 4 == 4 else P.ETH_IP6) + inner
    c = dp.counters()
    assert c.decapsulated == 1 and c.other["xdp_decapsulated"] == 1 and c.other["xdp_to_stack"] == 1


def test_xdp_passes_to_stack_when_fib_has_no_neighbour(xdp_dp, lab):
    # 10.1.0.77 is on eid0's subnet but has no neighbour entry
    inner = P.ip_packet("10.2.0.5", "10.1.0.77")
    frame = rloc_frame(P.lisp_packet("192.0.2.2", "192.0.2.1", inner))
    res = xdp(xdp_dp, lab, frame)
    assert res.retval == XDP_PASS and res.data == frame[:12] + b"\x08\x00" + inner
    assert xdp_dp.counters().other["xdp_to_stack"] == 1


@pytest.mark.parametrize("case", sorted(CASES))
def test_xdp_inner_ttl_becomes_min_of_inner_and_outer(xdp_dp, lab, case):
    inner, frame = decap_case(case, inner_ttl=60, outer_ttl=5)
    out = xdp(xdp_dp, lab, frame).data[14:]
    assert out == tc(xdp_dp, lab, frame).data[14:]
    # min(60, 5), then one router hop (redirected)
    if inner[0] >> 4 == 4:
        assert out[8] == 4 and P.csum(out[:20]) == 0
        assert out[:8] == inner[:8] and out[9] == inner[9] and out[12:] == inner[12:]
    else:
        assert out[7] == 4 and out[:7] == inner[:7] and out[8:] == inner[8:]
    # a higher outer TTL leaves the inner one alone (but for the hop)
    inner, frame = decap_case(case, inner_ttl=60, outer_ttl=200)
    assert xdp(xdp_dp, lab, frame).data[14:] == P.hop(inner)


def test_xdp_trims_ethernet_padding(xdp_dp, lab):
    inner = P.ip_packet("10.2.0.5", "10.1.0.10", b"")
    frame = rloc_frame(P.lisp_packet("192.0.2.2", "192.0.2.1", inner)) + bytes(18)
    res = xdp(xdp_dp, lab, frame)
    assert res.retval == XDP_REDIRECT and res.data[14:] == P.hop(inner)


# ---------- untouched, dropped ----------

@pytest.mark.parametrize("l3", [
    P.ipv4("192.0.2.2", "192.0.2.1", P.udp("192.0.2.2", "192.0.2.1", 4342, 4342, b"\x10" + bytes(40))),
    P.ipv4("192.0.2.2", "192.0.2.1", P.udp("192.0.2.2", "192.0.2.1", 50000, 4342, b"\x20" + bytes(40))),
    P.ipv4("192.0.2.2", "192.0.2.1", P.tcp("192.0.2.2", "192.0.2.1", 1, 4341), proto=P.TCP),
    P.ipv4("192.0.2.2", "192.0.2.1", P.udp("192.0.2.2", "192.0.2.1", 1, 53, b"dns")),
    P.ipv6("2001:db8:1::2", "2001:db8:1::1", P.udp("2001:db8:1::2", "2001:db8:1::1", 4342, 4342, bytes(30))),
    P.lisp_packet("192.0.2.2", "192.0.2.77", P.ip_packet("10.2.0.5", "10.1.0.10")),
], ids=["ctrl", "ctrl-ephemeral", "tcp", "dns", "ctrl6", "not-our-rloc"])
def test_xdp_passes_non_lisp_untouched(xdp_dp, lab, l3):
    frame = rloc_frame(l3)
    res = xdp(xdp_dp, lab, frame)
    assert res.retval == XDP_PASS and res.data == frame
    c = xdp_dp.counters()
    assert c.decapsulated == 0 and c.total_drops == 0


def test_xdp_drops_unknown_iid_non_local_and_ttl_zero(xdp_dp, lab):
    dp = xdp_dp
    for inner, kw in ((P.ip_packet("10.2.0.5", "10.1.0.10"), {"iid": 99}),
                      (P.ip_packet("10.2.0.5", "10.66.0.1"), {}),
                      (P.ip_packet("10.2.0.5", "10.1.0.10"), {"ttl": 0})):
        res = xdp(dp, lab, rloc_frame(P.lisp_packet("192.0.2.2", "192.0.2.1", inner, **kw)))
        assert res.retval == XDP_DROP
    c = dp.counters()
    assert (c.drops["unknown_iid"], c.drops["not_local_eid"], c.drops["ttl"]) == (1, 1, 1)
    assert c.decapsulated == 0


def test_xdp_leaves_reencapsulation_to_tc(xdp_dp, lab):
    dp = xdp_dp
    dp.set_reencap(True)
    dp.set_mapping(E("10.30.0.0/16"), [Rloc(ip("192.0.2.4"))])
    frame = rloc_frame(P.lisp_packet("192.0.2.2", "192.0.2.1", P.ip_packet("10.2.0.5", "10.30.0.1")))
    res = xdp(dp, lab, frame)
    assert res.retval == XDP_PASS and res.data == frame
    assert dp.counters().decapsulated == 0
    assert tc(dp, lab, frame).retval == TC_ACT_REDIRECT


VALID = [
    P.lisp_packet("192.0.2.2", "192.0.2.1", P.ip_packet("10.2.0.5", "10.1.0.10", b"z" * 40)),
    P.lisp_packet("192.0.2.2", "192.0.2.1", P.ip_packet("fd00:2::5", "fd00:1::10", b"z" * 40)),
    P.lisp_packet("2001:db8:1::2", "2001:db8:1::1", P.ip_packet("10.2.0.5", "10.1.0.10", b"z" * 40)),
    P.lisp_packet("2001:db8:1::2", "2001:db8:1::1", P.ip_packet("fd00:2::5", "fd00:1::10", b"z" * 40)),
]


@pytest.mark.parametrize("pkt", range(len(VALID)))
def test_xdp_every_truncation_is_safe(xdp_dp, lab, pkt):
    full = rloc_frame(VALID[pkt])
    for n in range(14 + 1, len(full)):
        frame = full[:n]
        res = xdp(xdp_dp, lab, frame)
        assert res.retval in (XDP_PASS, XDP_DROP), f"truncated to {n} bytes: {res.retval}"
        if res.retval == XDP_PASS:
            assert res.data == frame
    c = xdp_dp.counters()
    assert c.decapsulated == 0 and c.drops["malformed"] > 0


def _kind(retval: int, frame: bytes, data: bytes, xdp_prog: bool) -> str:
    if retval == (XDP_DROP if xdp_prog else TC_ACT_SHOT):
        return "drop"
    if data == frame:
        assert retval == (XDP_PASS if xdp_prog else TC_ACT_OK)
        return "pass"
    assert retval in ((XDP_PASS, XDP_REDIRECT) if xdp_prog else (TC_ACT_OK, TC_ACT_REDIRECT)), retval
    return "decap"


def test_xdp_and_tc_agree_on_mutated_and_random_frames(xdp_dp, lab):
    """The shared checks: for any frame both ETRs pass it untouched, drop it
    for the same reason, or decapsulate it (to the same bytes when both
    forward); the XDP output is never a half-changed packet."""
    dp = xdp_dp
    rng = random.Random(4342)
    frames = []
    for _ in range(1500):
        base = bytearray(rloc_frame(rng.choice(VALID)))
        for _ in range(rng.randrange(1, 4)):
            pos = rng.randrange(14, min(len(base), 14 + 40 + 16 + 40))
            base[pos] = rng.randrange(256)
        frames.append(bytes(base[:rng.randrange(len(base) - 30, len(base) + 1)]))
    for _ in range(500):
        frames.append(rloc_frame(rng.randbytes(rng.randrange(40, 140))))
    seen = set()
    for frame in frames:
        dp.table("counters").clear()
        rx = xdp(dp, lab, frame)
        cx = dp.counters()
        dp.table("counters").clear()
        rt = tc(dp, lab, frame)
        ct = dp.counters()
        kx, kt = _kind(rx.retval, frame, rx.data, True), _kind(rt.retval, frame, rt.data, False)
        assert kx == kt, frame.hex()
        assert cx.drops == ct.drops and cx.decapsulated == ct.decapsulated
        if kx == "decap":
            # the stack (XDP_PASS) decrements the TTL itself; a redirect did already
            xin = P.hop(rx.data[14:]) if rx.retval == XDP_PASS and rt.retval == TC_ACT_REDIRECT else rx.data[14:]
            assert xin == rt.data[14:]
            if rx.retval == XDP_REDIRECT and rt.retval == TC_ACT_REDIRECT:
                assert rx.data == rt.data
        seen.add(kx)
    assert seen == {"drop", "pass", "decap"}, "the mutations must exercise every outcome"
