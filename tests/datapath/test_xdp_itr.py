"""The XDP ITR (lisp_itr_xdp) through BPF_PROG_TEST_RUN: the same bytes as
the tc ITR in all four family combinations (but for the random nonce), and
everything it does not handle passed on untouched and uncounted, for the tc
ITR behind it."""
from __future__ import annotations

import ipaddress
import random

import pytest

from lispctl.datapath.testrun import TC_ACT_REDIRECT, TC_ACT_SHOT, XDP_PASS, XDP_REDIRECT, run_prog, skb_ctx, xdp_ctx
from lispctl.mapping.types import EidPrefix, MapAction, Rloc
from tests.datapath import packets as P
from tests.datapath.test_encap_decap import CASES, itr_frame

ip = ipaddress.ip_address
E = EidPrefix.parse


def xdp(dp, lab, frame: bytes):
    return run_prog(dp.prog_fd("lisp_itr_xdp"), frame, ctx=xdp_ctx(len(frame), lab.eid_if))


def tc(dp, lab, frame: bytes):
    return run_prog(dp.prog_fd("lisp_itr_ingress"), frame, ctx=skb_ctx(ifindex=lab.eid_if))


def _masked(frame: bytes) -> bytes:
    """The frame without what differs between two encapsulations of one
    packet: the LISP nonce and, over IPv6, the UDP checksum covering it."""
    b = bytearray(frame)
    l4 = 14 + (20 if b[14] >> 4 == 4 else 40)
    b[l4 + 9:l4 + 12] = bytes(3)
    if b[14] >> 4 == 6:
        b[l4 + 6:l4 + 8] = bytes(2)
    return bytes(b)


def _udp6_ok(frame: bytes) -> bool:
    o = P.split_encap(frame)
    return o.version == 4 or (o.udp_csum != 0 and
                              P.csum(P._pseudo(o.src, o.dst, 17, o.udp_len) + frame[14 + 40:]) == 0)


@pytest.fixture
def xdp_dp(dp, lab):
    """dp with the XDP ITR allowed to redirect into rl0 (as for a NIC)."""
    dp.set_xdp_redirect("rl0", True)
    return dp


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("iid", [0, 0x123456])
def test_xdp_itr_encapsulates_like_tc(xdp_dp, lab, case, iid):
    dp = xdp_dp
    src, dst, prefix, rloc, _local = CASES[case]
    eid = E(prefix, iid)
    dp.set_mapping(eid, [Rloc(ip(rloc))])
    if iid:
        dp.attach_eid_interface("eid0", iid)
        dp.add_local_eid(E("10.1.0.0/16" if ip(src).version == 4 else "fd00:1::/32", iid))
    kw = {"ttl": 61, "tos": 0xB8} if ip(src).version == 4 else {"hlim": 61, "tc": 0xB8}
    for inner in (P.ip_packet(src, dst, b"x" * 100, **kw),
                  (P.ipv4 if ip(src).version == 4 else P.ipv6)(
                      src, dst, P.tcp(src, dst, 5, 6, b"t"), **({"proto": P.TCP} if ip(src).version == 4
                                                                else {"nh": P.TCP}), **kw)):
        frame = itr_frame(inner)
        rx, rt = xdp(dp, lab, frame), tc(dp, lab, frame)
        assert rx.retval == XDP_REDIRECT and rt.retval == TC_ACT_REDIRECT
        # byte for byte the tc ITR's encapsulation (itself checked exactly
        # in test_encap_decap), apart from the nonce and what covers it
        assert _masked(rx.data) == _masked(rt.data)
        o = P.split_encap(rx.data)
        assert o.inner == P.hop(inner) and o.ttl == 60 and o.dst == ip(rloc)
        assert _udp6_ok(rx.data), "outer IPv6 UDP checksum"
    c = dp.counters()
    assert c.encapsulated == 4 and c.other["xdp_encapsulated"] == 2 and c.total_drops == 0
    assert dp.mapping_counters(eid)[0] == 4


def test_xdp_itr_trims_ethernet_padding(xdp_dp, lab):
    dp = xdp_dp
    dp.set_mapping(E("10.2.0.0/16"), [Rloc(ip("192.0.2.2"))])
    inner = P.ip_packet("10.1.0.10", "10.2.0.5", b"")
    frame = itr_frame(inner) + bytes(18)
    rx = xdp(dp, lab, frame)
    assert rx.retval == XDP_REDIRECT
    assert P.split_encap(rx.data).inner == P.hop(inner)
    assert _masked(rx.data) == _masked(tc(dp, lab, frame).data)


def test_xdp_itr_nonces_differ(xdp_dp, lab):
    """The XDP ITR draws its nonces from the tc ITR's per-CPU generator: 256
    packets of one flow, practically all different, in both programs taking
    turns."""
    dp = xdp_dp
    dp.set_mapping(E("10.2.0.0/16"), [Rloc(ip("192.0.2.2"))])
    frame = itr_frame(P.ip_packet("10.1.0.10", "10.2.0.5"))
    nonces = []
    for i in range(256):
        rx = xdp(dp, lab, frame) if i % 2 else tc(dp, lab, frame)
        assert rx.retval == (XDP_REDIRECT if i % 2 else TC_ACT_REDIRECT)
        nonces.append(P.split_encap(rx.data).nonce)
    assert len(set(nonces)) >= 250
    assert len({n >> 16 for n in nonces}) > 64 and len({n & 0xFF for n in nonces}) > 64


def test_xdp_itr_locator_choice_is_the_tc_itr_one(xdp_dp, lab):
    dp = xdp_dp
    dp.set_mapping(E("10.2.0.0/16"), [Rloc(ip("192.0.2.2"), weight=50), Rloc(ip("192.0.2.3"), weight=30),
                                      Rloc(ip("2001:db8:1::2"), weight=20)])
    rng = random.Random(13)
    used = set()
    for _ in range(64):
        frame = itr_frame(P.ip_packet("10.1.0.10", f"10.2.{rng.randrange(256)}.{rng.randrange(256)}",
                                      sport=rng.randrange(1024, 65535)))
        rx, rt = xdp(dp, lab, frame), tc(dp, lab, frame)
        assert rx.retval == XDP_REDIRECT
        assert _masked(rx.data) == _masked(rt.data)
        used.add(P.split_encap(rx.data).dst)
    assert len(used) == 3


def _untouched(dp, lab, frame: bytes) -> None:
    res = xdp(dp, lab, frame)
    assert res.retval == XDP_PASS and res.data == frame
    c = dp.counters()
    assert c.encapsulated == 0 and c.miss == 0 and c.total_drops == 0 and not any(c.other.values()), c


@pytest.mark.parametrize("why", ["miss", "negative", "native", "ttl1", "too-big", "no-neighbour",
                                 "not-a-target", "local", "no-locator", "special", "no-source"])
def test_xdp_itr_passes_what_tc_handles(xdp_dp, lab, why):
    """Passed untouched and counted nowhere: the tc ITR behind XDP counts
    and handles it (miss events, ICMP, neighbour resolution, fragments)."""
    dp = xdp_dp
    dst, kw = "10.2.0.5", {}
    if why != "miss":
        dp.set_mapping(E("10.2.0.0/16"), [Rloc(ip("192.0.2.2"))])
    if why == "negative":
        dp.set_mapping(E("10.2.0.0/16"), [], MapAction.DROP)
    elif why == "native":
        dp.set_mapping(E("10.2.0.0/16"), [], MapAction.NATIVELY_FORWARD)
    elif why == "ttl1":
        kw = {"ttl": 1}
    elif why == "too-big":
        dp.set_path_mtu(36 + 20 + 8 + 50)
    elif why == "no-neighbour":
        dp.set_mapping(E("10.2.0.0/16"), [Rloc(ip("192.0.2.77"))])     # on rl0's subnet, no neighbour
    elif why == "not-a-target":
        dp.set_xdp_redirect("rl0", False)
    elif why == "local":
        dst = "10.1.0.20"
    elif why == "no-locator":
        dp.set_mapping(E("10.2.0.0/16"), [Rloc(ip("192.0.2.2"), reachable=False)])
    elif why == "special":
        dst = "224.0.0.5"
    elif why == "no-source":
        dp.remove_local_rloc(ip("192.0.2.1"))
    _untouched(dp, lab, itr_frame(P.ip_packet("10.1.0.10", dst, b"p" * 64, **kw)))


def test_xdp_itr_passes_truncated_and_non_ip(xdp_dp, lab):
    dp = xdp_dp
    dp.set_mapping(E("10.2.0.0/16"), [Rloc(ip("192.0.2.2"))])
    full = itr_frame(P.ip_packet("10.1.0.10", "10.2.0.5", b"q" * 40))
    for n in range(15, len(full)):       # a test run needs the Ethernet header
        _untouched(dp, lab, full[:n])
    _untouched(dp, lab, full[:12] + b"\x08\x06" + full[14:])         # ARP ethertype


def test_xdp_itr_never_disagrees_with_tc_on_mutated_frames(xdp_dp, lab):
    """For any frame the XDP ITR either passes it untouched and uncounted
    (the tc ITR then decides) or encapsulates it exactly as the tc ITR does."""
    dp = xdp_dp
    for _src, _dst, prefix, rloc, _local in CASES.values():
        dp.set_mapping(E(prefix), [Rloc(ip(rloc))])
    valid = [itr_frame(P.ip_packet(src, dst, b"m" * 48)) for src, dst, *_ in CASES.values()]
    rng = random.Random(13013)
    redirected = 0
    for _ in range(1500):
        base = bytearray(rng.choice(valid))
        for _ in range(rng.randrange(1, 3)):
            pos = rng.randrange(12, 14 + 40 + 8)
            base[pos] = rng.randrange(256)
        cut = len(base) if rng.random() < 0.5 else rng.randrange(len(base) - 20, len(base))
        frame = bytes(base[:cut])
        if len(frame) <= 14:
            continue
        dp.table("counters").clear()
        rx = xdp(dp, lab, frame)
        if rx.retval == XDP_PASS:
            assert rx.data == frame, frame.hex()
            c = dp.counters()
            assert c.encapsulated == 0 and c.total_drops == 0 and c.miss == 0, frame.hex()
            continue
        assert rx.retval == XDP_REDIRECT, frame.hex()
        rt = tc(dp, lab, frame)
        assert rt.retval == TC_ACT_REDIRECT and _masked(rx.data) == _masked(rt.data), frame.hex()
        redirected += 1
    assert redirected > 100, "the mutations must leave many frames encapsulable"


def test_ip_length_below_its_header_is_malformed(xdp_dp, lab):
    """An IPv4 total length below 20: XDP passes it untouched (it used to be
    dropped there half rewritten), the tc ITR counts it malformed (it used to
    count encap_failed)."""
    dp = xdp_dp
    dp.set_mapping(E("10.2.0.0/16"), [Rloc(ip("192.0.2.2"))])
    pkt = bytearray(P.ip_packet("10.1.0.10", "10.2.0.5", b"s" * 40))
    pkt[2:4] = (9).to_bytes(2, "big")
    pkt[10:12] = b"\0\0"
    pkt[10:12] = P.csum(bytes(pkt[:20])).to_bytes(2, "big")
    frame = itr_frame(bytes(pkt))
    _untouched(dp, lab, frame)
    assert tc(dp, lab, frame).retval == TC_ACT_SHOT
    c = dp.counters()
    assert c.drops["malformed"] == 1 and c.drops["encap_failed"] == 0
