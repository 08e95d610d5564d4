"""Data-plane defects found by review (issue 8 items 9, 13, 14; issue 9
item 7; issue 13 section 4), through BPF_PROG_TEST_RUN: exact bytes and
the counter each drop lands in."""
from __future__ import annotations

import ipaddress
import struct
import time

import pytest

from lispctl.datapath.testrun import TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, XDP_PASS, run_prog, skb_ctx, xdp_ctx
from lispctl.mapping.types import EidPrefix, MapAction, Rloc
from tests.datapath import packets as P
from tests.datapath.conftest import EID_MAC, HOST_MAC, PEER_MAC, RLOC_MAC

ip = ipaddress.ip_address
E = EidPrefix.parse


def itr(dp, inner: bytes, pad: int = 0, **ctx):
    et = P.ETH_IP if inner[0] >> 4 == 4 else P.ETH_IP6
    frame = P.eth(P.mac(EID_MAC), P.mac(HOST_MAC), et) + inner + bytes(pad)
    return run_prog(dp.prog_fd("lisp_itr_ingress"), frame, ctx=skb_ctx(**ctx) if ctx else None)


def etr_frame(l3: bytes) -> bytes:
    et = P.ETH_IP if l3[0] >> 4 == 4 else P.ETH_IP6
    return P.eth(P.mac(RLOC_MAC), P.mac(PEER_MAC["192.0.2.2"]), et) + l3


def etr(dp, l3: bytes, **ctx):
    return run_prog(dp.prog_fd("lisp_etr_ingress"), etr_frame(l3), ctx=skb_ctx(**ctx) if ctx else None)


def to_us(inner: bytes, outer_tos: int = 0, ttl: int = 64) -> bytes:
    """A LISP packet to our IPv4 RLOC with the given outer TOS byte."""
    pkt = bytearray(P.lisp_packet("192.0.2.2", "192.0.2.1", inner, ttl=ttl))
    pkt[1] = outer_tos
    pkt[10:12] = b"\0\0"
    pkt[10:12] = struct.pack("!H", P.csum(bytes(pkt[:20])))
    return bytes(pkt)


# ---------- issue 8.9: Ethernet padding is not carried inside ----------

@pytest.mark.parametrize("src, dst, prefix, rloc", [
    ("10.1.0.10", "10.2.0.5", "10.2.0.0/16", "192.0.2.2"),
    ("fd00:1::10", "fd00:2::5", "fd00:2::/32", "2001:db8:1::2"),
    ("10.1.0.10", "10.3.0.5", "10.3.0.0/16", "2001:db8:1::3"),
], ids=["4in4", "6in6", "4in6"])
def test_padded_short_frames_encapsulate_the_inner_packet_only(dp, lab, src, dst, prefix, rloc):
    dp.set_mapping(E(prefix), [Rloc(ip(rloc))])
    # a bare TCP ACK: 40 (IPv4) / 60 (IPv6) bytes, padded as a NIC delivers it
    fam = ip(src).version
    inner = (P.ipv4(src, dst, P.tcp(src, dst, 5, 6, flags=0x10), proto=P.TCP) if fam == 4 else
             P.ipv6(src, dst, P.tcp(src, dst, 5, 6, flags=0x10), nh=P.TCP))
    pad = max(60 - 14 - len(inner), 0) + 6
    res = itr(dp, inner, pad=pad, ifindex=lab.eid_if)
    assert res.retval == TC_ACT_REDIRECT
    o = P.split_encap(res.data)
    assert o.inner == P.hop(inner), "padding carried inside the LISP packet"
    assert o.udp_len == 16 + len(inner)
    # and lispctl's own ETR takes it (it drops tot_len != UDP payload)
    c0 = dp.counters()
    back = run_prog(dp.prog_fd("lisp_etr_ingress"), res.data, ctx=skb_ctx(ifindex=lab.rl_if))
    assert dp.counters().drops["malformed"] == c0.drops["malformed"]
    assert back.retval in (TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT)


def test_frame_shorter_than_its_ip_length_is_dropped(dp):
    dp.set_mapping(E("10.2.0.0/16"), [Rloc(ip("192.0.2.2"))])
    inner = P.ip_packet("10.1.0.10", "10.2.0.5", b"x" * 100)
    assert itr(dp, inner[:-20]).retval == TC_ACT_SHOT
    assert dp.counters().drops["malformed"] == 1


# ---------- issue 8.13: map-cache updates never leak EID traffic ----------

def test_entry_without_locator_set_drops_not_forwards(dp):
    eid = E("10.2.0.0/16")
    dp.set_mapping(eid, [Rloc(ip("192.0.2.2"))])
    # the state a non-atomic update went through: entry says encapsulate, locators gone
    t = dp.table("locsets")
    del t[t.Key(dp.mappings()[eid])]
    res = itr(dp, P.ip_packet("10.1.0.10", "10.2.0.5"))
    assert res.retval == TC_ACT_SHOT
    c = dp.counters()
    assert c.drops["no_locator_set"] == 1 and c.other["native"] == 0


def test_no_action_without_locators_is_installed_as_native_forward(dp):
    """RFC 9301: a no-action negative entry means 'do not encapsulate'; it is
    written as an explicit natively-forward action."""
    eid = E("10.2.0.0/16")
    dp.set_mapping(eid, [Rloc(ip("192.0.2.2"))])
    dp.set_mapping(eid, [], MapAction.NO_ACTION)
    inner = P.ip_packet("10.1.0.10", "10.2.0.5")
    res = itr(dp, inner)
    assert res.retval == TC_ACT_OK and res.data[14:] == inner
    t = dp.table("map_cache4")
    assert [v.action for v in t.values()] == [int(MapAction.NATIVELY_FORWARD)]
    assert len(dp.table("locsets")) == 0, "the old locator set is freed"


def test_update_order_never_leaves_an_encapsulating_entry_without_locators(dp, monkeypatch):
    """Every intermediate state set_mapping writes, replayed through the
    ITR: positive -> negative -> positive -> other locators; no packet is
    forwarded natively except by the explicit negative entry."""
    eid = E("10.2.0.0/16")
    inner = P.ip_packet("10.1.0.10", "10.2.0.5")
    verdicts = []
    for name in ("_write_locset", "_del_locset"):
        orig = getattr(dp, name)

        def wrapped(*a, _orig=orig, **kw):
            verdicts.append(itr(dp, inner).retval)
            _orig(*a, **kw)
            verdicts.append(itr(dp, inner).retval)
        monkeypatch.setattr(dp, name, wrapped)
    dp.set_mapping(eid, [Rloc(ip("192.0.2.2"))])
    n_before_negative = len(verdicts)
    dp.set_mapping(eid, [], MapAction.DROP)
    assert TC_ACT_OK not in verdicts[n_before_negative:], verdicts
    dp.set_mapping(eid, [Rloc(ip("192.0.2.3"))])
    dp.set_mapping(eid, [Rloc(ip("192.0.2.4"))])
    assert TC_ACT_OK not in verdicts, verdicts
    assert dp.counters().drops["no_locator_set"] == 0


# ---------- issue 8.14: RFC 6040 on decapsulation ----------

NOT_ECT, ECT1, ECT0, CE = 0, 1, 2, 3


@pytest.mark.parametrize("inner_ecn, outer_ecn, want", [
    (ECT0, CE, CE), (ECT1, CE, CE), (CE, CE, CE), (ECT0, ECT1, ECT1),
    (ECT0, ECT0, ECT0), (ECT1, ECT0, ECT1), (CE, ECT0, CE),
    (NOT_ECT, ECT0, NOT_ECT), (NOT_ECT, NOT_ECT, NOT_ECT), (ECT0, NOT_ECT, ECT0),
])
@pytest.mark.parametrize("fam", [4, 6])
def test_ecn_decapsulation_normal_mode(dp, lab, inner_ecn, outer_ecn, want, fam):
    src, dst = ("10.2.0.5", "10.1.0.10") if fam == 4 else ("fd00:2::5", "fd00:1::10")
    kw = {"tos": 0xB8 | inner_ecn} if fam == 4 else {"tc": 0xB8 | inner_ecn}
    inner = P.ip_packet(src, dst, b"e" * 20, **kw)
    res = etr(dp, to_us(inner, outer_tos=0x20 | outer_ecn), ifindex=lab.rl_if)
    assert res.retval == TC_ACT_REDIRECT
    out = res.data[14:]
    if fam == 4:
        assert out[1] == 0xB8 | want and P.csum(out[:20]) == 0
    else:
        assert (struct.unpack("!I", out[:4])[0] >> 20) & 0xFF == 0xB8 | want
    assert dp.counters().other["ecn_marked"] == (1 if want != inner_ecn else 0)


@pytest.mark.parametrize("fam", [4, 6])
def test_ce_over_not_ect_is_dropped(dp, fam):
    src, dst = ("10.2.0.5", "10.1.0.10") if fam == 4 else ("fd00:2::5", "fd00:1::10")
    res = etr(dp, to_us(P.ip_packet(src, dst), outer_tos=CE))
    assert res.retval == TC_ACT_SHOT
    assert dp.counters().drops["ecn"] == 1


def test_encapsulation_copies_ecn_to_the_outer_header(dp):
    """RFC 6040 normal mode at the ITR: the outer ECN field is the inner one (CE included)."""
    dp.set_mapping(E("10.2.0.0/16"), [Rloc(ip("192.0.2.2"))])
    for ecn in (NOT_ECT, ECT1, ECT0, CE):
        o = P.split_encap(itr(dp, P.ip_packet("10.1.0.10", "10.2.0.5", tos=0x20 | ecn)).data)
        assert o.tos == 0x20 | ecn


# ---------- issue 9.7: inner packets the ETR must not deliver ----------

def _inner_bad(kind: str, fam: int) -> bytes:
    src, dst = ("10.2.0.5", "10.1.0.10") if fam == 4 else ("fd00:2::5", "fd00:1::10")
    if kind == "ttl0":
        return P.ip_packet(src, dst, ttl=0) if fam == 4 else P.ip_packet(src, dst, hlim=0)
    pkt = bytearray(P.ip_packet(src, dst, b"l" * 20))
    if kind == "ihl":           # header length beyond the packet
        pkt[0] = 0x4F
    elif kind == "ihl-short":   # below the minimum
        pkt[0] = 0x44
    elif kind == "length":      # inner length disagreeing with the outer packet
        if fam == 4:
            struct.pack_into("!H", pkt, 2, len(pkt) - 4)
        else:
            struct.pack_into("!H", pkt, 4, len(pkt) - 40 - 4)
    if fam == 4:
        pkt[10:12] = b"\0\0"
        pkt[10:12] = struct.pack("!H", P.csum(bytes(pkt[:20])))
    return bytes(pkt)


@pytest.mark.parametrize("kind, fam, reason", [
    ("ttl0", 4, "inner_ttl"), ("ttl0", 6, "inner_ttl"),
    ("ihl", 4, "malformed"), ("ihl-short", 4, "malformed"),
    ("length", 4, "malformed"), ("length", 6, "malformed"),
])
def test_etr_drops_bad_inner_packets(dp, kind, fam, reason):
    l3 = to_us(_inner_bad(kind, fam))
    res = etr(dp, l3)
    assert res.retval == TC_ACT_SHOT
    c = dp.counters()
    assert c.drops[reason] == 1 and c.decapsulated == 0
    # the XDP ETR shares the checks
    res = run_prog(dp.prog_fd("lisp_etr_xdp"), etr_frame(l3), ctx=xdp_ctx(len(etr_frame(l3))))
    assert dp.counters().drops[reason] == 2


# ---------- issue 13 section 4: TTL where we route ----------

@pytest.mark.parametrize("fam", [4, 6])
def test_itr_answers_ttl_1_with_time_exceeded(dp, fam):
    src, dst, prefix, rloc = (("10.1.0.10", "10.2.0.5", "10.2.0.0/16", "192.0.2.2") if fam == 4 else
                              ("fd00:1::10", "fd00:2::5", "fd00:2::/32", "2001:db8:1::2"))
    dp.set_mapping(E(prefix), [Rloc(ip(rloc))])
    one = P.ip_packet(src, dst, ttl=1) if fam == 4 else P.ip_packet(src, dst, hlim=1)
    time.sleep(0.02)        # an earlier test's Time Exceeded: its 10 ms rate-limit window is over
    res = itr(dp, one)
    # back to the sender's hop: ICMP Time Exceeded quoting the packet (all of it, it is short)
    assert res.retval == TC_ACT_REDIRECT
    assert res.data[:6] == P.mac(HOST_MAC) and res.data[6:12] == P.mac(EID_MAC)
    out = res.data[14:]
    if fam == 4:
        assert P.csum(out[:20]) == 0 and out[9] == P.ICMP
        assert ip(out[12:16]) == ip(dst) and ip(out[16:20]) == ip(src)
        icmp = out[20:]
        assert (icmp[0], icmp[1]) == (11, 0) and P.csum(icmp) == 0 and icmp[8:] == one[:28]
    else:
        assert out[6] == P.ICMP6 and ip(out[8:24]) == ip(dst) and ip(out[24:40]) == ip(src)
        icmp = out[40:]
        assert (icmp[0], icmp[1]) == (3, 0) and icmp[8:] == one
        assert P.csum(out[8:40] + struct.pack("!I3xB", len(icmp), P.ICMP6) + icmp) == 0
    two = P.ip_packet(src, dst, ttl=2) if fam == 4 else P.ip_packet(src, dst, hlim=2)
    o = P.split_encap(itr(dp, two).data)
    assert o.inner == P.hop(two) and o.ttl == 1
    c = dp.counters()
    assert c.other["icmp_time_exceeded"] == 1 and c.drops["ttl_expired"] == 1 and c.encapsulated == 1


def test_time_exceeded_is_rate_limited(dp):
    dp.set_mapping(E("10.2.0.0/16"), [Rloc(ip("192.0.2.2"))])
    one = P.ip_packet("10.1.0.10", "10.2.0.5", ttl=1)
    time.sleep(0.02)        # outside an earlier test's 10 ms window
    sent = sum(itr(dp, one).retval == TC_ACT_REDIRECT for _ in range(200))
    c = dp.counters()
    assert c.drops["ttl_expired"] == 200
    assert c.other["icmp_time_exceeded"] == sent and 1 <= sent < 200


def test_egress_itr_does_not_decrement(dp):
    """Locally originated (mobile node): no router hop."""
    dp.set_mapping(E("10.2.0.0/16"), [Rloc(ip("192.0.2.2"))])
    one = P.ip_packet("10.1.0.10", "10.2.0.5", ttl=1)
    res = run_prog(dp.prog_fd("lisp_itr_egress"), P.eth(P.mac(EID_MAC), P.mac(HOST_MAC), P.ETH_IP) + one)
    assert res.retval == TC_ACT_REDIRECT and P.split_encap(res.data).inner == one


@pytest.mark.parametrize("fam", [4, 6])
@pytest.mark.parametrize("prog", ["lisp_etr_ingress", "lisp_etr_xdp"])
def test_etr_hands_ttl_1_to_the_stack(xdp_target, lab, fam, prog):
    dp = xdp_target
    src, dst = ("10.2.0.5", "10.1.0.10") if fam == 4 else ("fd00:2::5", "fd00:1::10")
    one = P.ip_packet(src, dst, ttl=1) if fam == 4 else P.ip_packet(src, dst, hlim=1)
    frame = etr_frame(to_us(one))
    if prog == "lisp_etr_xdp":
        res = run_prog(dp.prog_fd(prog), frame, ctx=xdp_ctx(len(frame), lab.rl_if))
        assert res.retval == XDP_PASS
    else:
        res = run_prog(dp.prog_fd(prog), frame, ctx=skb_ctx(ifindex=lab.rl_if))
        assert res.retval == TC_ACT_OK
    # decapsulated, still addressed to us, TTL 1: the stack's forwarding sends Time Exceeded
    assert res.data[:12] == frame[:12] and res.data[14:] == one
    assert dp.counters().other["ttl_to_stack"] == 1


@pytest.fixture
def xdp_target(dp):
    """eid0 as an XDP redirect target, so the XDP ETR would redirect."""
    dp.set_xdp_redirect("eid0", True)
    yield dp
    dp.set_xdp_redirect("eid0", False)
