"""ITR/ETR decisions: negative entries, misses, locator selection, ETR
filtering, robustness against malformed input, counters, MTU."""
from __future__ import annotations

import ipaddress
import random
import struct

import pytest

from lispctl.datapath.testrun import TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, run_prog, skb_ctx
from lispctl.mapping.types import EidPrefix, MapAction, Rloc
from tests.datapath import packets as P
from tests.datapath.conftest import EID_MAC, HOST_MAC, PEER_MAC, RLOC_MAC

ip = ipaddress.ip_address
E = EidPrefix.parse


def itr(dp, inner: bytes, prog: str = "lisp_itr_ingress", **ctx):
    et = P.ETH_IP if inner[0] >> 4 == 4 else P.ETH_IP6
    frame = P.eth(P.mac(EID_MAC), P.mac(HOST_MAC), et) + inner
    return run_prog(dp.prog_fd(prog), frame, ctx=skb_ctx(**ctx) if ctx else None)


def etr(dp, l3: bytes, **ctx):
    et = P.ETH_IP if l3[0] >> 4 == 4 else P.ETH_IP6
    frame = P.eth(P.mac(RLOC_MAC), P.mac(PEER_MAC["192.0.2.2"]), et) + l3
    return frame, run_prog(dp.prog_fd("lisp_etr_ingress"), frame, ctx=skb_ctx(**ctx) if ctx else None)


# ---------- negative entries and misses ----------

def test_negative_drop_entries_are_counted_by_reason(dp):
    dp.set_mapping(E("10.9.0.0/16"), [], MapAction.DROP)
    dp.set_mapping(E("10.8.0.0/16"), [], MapAction.DROP_POLICY_DENIED)
    dp.set_mapping(E("10.7.0.0/16"), [], MapAction.DROP_AUTH_FAILURE)
    for dst in ("10.9.0.1", "10.8.0.1", "10.7.0.1"):
        assert itr(dp, P.ip_packet("10.1.0.10", dst)).retval == TC_ACT_SHOT
    d = dp.counters().drops
    assert (d["negative"], d["policy_denied"], d["auth_failure"]) == (1, 1, 1)
    assert dp.poll_misses(0) == []


def test_natively_forward_passes_untouched(dp):
    dp.set_mapping(E("10.9.0.0/16"), [], MapAction.NATIVELY_FORWARD)
    inner = P.ip_packet("10.1.0.10", "10.9.0.1")
    res = itr(dp, inner)
    assert res.retval == TC_ACT_OK and res.data[14:] == inner
    assert dp.counters().other["native"] == 1


def test_send_map_request_emits_miss_event(dp):
    dp.set_mapping(E("10.9.0.0/16", 5), [], MapAction.SEND_MAP_REQUEST)
    dp.attach_eid_interface("eid0", 5)
    res = itr(dp, P.ip_packet("10.1.0.10", "10.9.0.1"), ifindex=dp_eid_if(dp))
    assert res.retval == TC_ACT_SHOT            # default miss action: drop
    (ev,) = dp.poll_misses(100)
    assert ev.eid == E("10.9.0.1/32", 5) and ev.source == ip("10.1.0.10")


def dp_eid_if(dp):
    from lispctl.datapath.attach import ifindex_of
    return ifindex_of("eid0")


def test_more_specific_entry_wins(dp):
    dp.set_mapping(E("10.2.0.0/16"), [], MapAction.DROP)
    dp.set_mapping(E("10.2.3.0/24"), [Rloc(ip("192.0.2.2"))])
    assert itr(dp, P.ip_packet("10.1.0.10", "10.2.3.4")).retval == TC_ACT_REDIRECT
    assert itr(dp, P.ip_packet("10.1.0.10", "10.2.4.4")).retval == TC_ACT_SHOT


def test_instance_ids_do_not_mix(dp):
    dp.set_mapping(E("10.2.0.0/16", 7), [Rloc(ip("192.0.2.2"))])
    # iid 0 packet: miss
    assert itr(dp, P.ip_packet("10.1.0.10", "10.2.0.1")).retval == TC_ACT_SHOT
    assert dp.counters().miss == 1


def test_miss_events_rate_limited_per_destination(dp):
    dp.set_miss_rate_limit_ms(60_000)
    for _ in range(1000):
        itr(dp, P.ip_packet("10.1.0.10", "10.50.0.1"))
    for i in range(20):
        itr(dp, P.ip_packet("10.1.0.10", f"10.60.0.{i + 1}"))
    events = dp.poll_misses(200)
    by_dst: dict = {}
    for ev in events:
        by_dst[ev.eid] = by_dst.get(ev.eid, 0) + 1
    assert by_dst[E("10.50.0.1/32")] == 1
    assert all(by_dst[E(f"10.60.0.{i + 1}/32")] == 1 for i in range(20))
    assert len(events) == 21
    c = dp.counters()
    assert c.miss == 1020 and c.drops["miss"] == 1020 and c.other["miss_events"] == 21


def test_miss_rate_limit_zero_reports_every_packet(dp):
    dp.set_miss_rate_limit_ms(0)
    for _ in range(5):
        itr(dp, P.ip_packet("10.1.0.10", "fd00:77::1".replace("fd00:77::1", "10.77.0.1")))
    assert len(dp.poll_misses(100)) == 5


def test_miss_action_native_and_petr(dp):
    inner = P.ip_packet("10.1.0.10", "10.50.0.1")
    dp.set_miss_action(MapAction.NATIVELY_FORWARD)
    res = itr(dp, inner)
    assert res.retval == TC_ACT_OK and res.data[14:] == inner
    dp.set_miss_action(MapAction.NATIVELY_FORWARD, petr=[Rloc(ip("192.0.2.5"))])
    res = itr(dp, inner)
    assert res.retval == TC_ACT_REDIRECT
    o = P.split_encap(res.data)
    assert o.dst == ip("192.0.2.5") and o.inner == P.hop(inner)     # routed: TTL - 1
    assert dp.counters().other["petr"] == 1
    dp.set_miss_action(MapAction.DROP)
    assert itr(dp, inner).retval == TC_ACT_SHOT
    assert len(dp.poll_misses(100)) >= 1


def test_local_site_traffic_is_not_encapsulated(dp):
    dp.set_mapping(E("0.0.0.0/0"), [Rloc(ip("192.0.2.2"))])
    inner = P.ip_packet("10.1.0.10", "10.1.0.254")
    res = itr(dp, inner)
    assert res.retval == TC_ACT_OK and res.data[14:] == inner
    assert dp.counters().encapsulated == 0


def test_non_ip_and_multicast_pass(dp):
    dp.set_mapping(E("0.0.0.0/0"), [Rloc(ip("192.0.2.2"))])
    arp = P.eth(b"\xff" * 6, P.mac(HOST_MAC), 0x0806) + bytes(28)
    assert run_prog(dp.prog_fd("lisp_itr_ingress"), arp).retval == TC_ACT_OK
    assert itr(dp, P.ip_packet("10.1.0.10", "224.0.0.5")).retval == TC_ACT_OK
    assert dp.counters().encapsulated == 0


# ---------- locator selection ----------

def flows_to(dp, n: int, dst: str = "10.2.0.5") -> dict:
    seen: dict = {}
    for i in range(n):
        src = f"10.1.{(i >> 8) & 0xFF}.{i & 0xFF}"
        inner = P.ip_packet(src, dst, sport=1024 + (i * 7) % 50000, dport=80)
        res = itr(dp, inner)
        assert res.retval == TC_ACT_REDIRECT
        o = P.split_encap(res.data)
        seen[o.dst] = seen.get(o.dst, 0) + 1
    return seen


def test_weighted_split_75_25(dp):
    dp.set_mapping(E("10.2.0.0/16"), [Rloc(ip("192.0.2.2"), 1, 75), Rloc(ip("192.0.2.3"), 1, 25)])
    seen = flows_to(dp, 10_000)
    share = seen[ip("192.0.2.2")] / 10_000
    assert abs(share - 0.75) <= 0.02, seen
    assert seen[ip("192.0.2.2")] + seen[ip("192.0.2.3")] == 10_000


def test_one_flow_one_locator(dp):
    dp.set_mapping(E("10.2.0.0/16"), [Rloc(ip("192.0.2.2"), 1, 50), Rloc(ip("192.0.2.3"), 1, 50)])
    inner = P.ip_packet("10.1.0.10", "10.2.0.5", sport=4444)
    dsts = {P.split_encap(itr(dp, inner).data).dst for _ in range(50)}
    assert len(dsts) == 1


def test_down_locator_falls_to_next_priority(dp):
    eid = E("10.2.0.0/16")
    dp.set_mapping(eid, [Rloc(ip("192.0.2.2"), 1, 100, reachable=False), Rloc(ip("192.0.2.3"), 2, 100)])
    assert set(flows_to(dp, 200)) == {ip("192.0.2.3")}
    dp.set_mapping(eid, [Rloc(ip("192.0.2.2"), 1, 100), Rloc(ip("192.0.2.3"), 2, 100)])
    assert set(flows_to(dp, 200)) == {ip("192.0.2.2")}


def test_kernel_skips_locator_marked_down(dp):
    """Slot tables still point at a locator whose up flag is clear (as during
    an update): the kernel must not use it."""
    eid = E("10.2.0.0/16")
    dp.set_mapping(eid, [Rloc(ip("192.0.2.2"), 1, 50), Rloc(ip("192.0.2.3"), 1, 50), Rloc(ip("192.0.2.4"), 2, 1)])
    t = dp.table("locsets")
    key = t.Key(dp.mappings()[eid])
    leaf = t[key]
    leaf.loc[0].up = 0
    t[key] = leaf
    assert set(flows_to(dp, 300)) == {ip("192.0.2.3")}
    leaf.loc[1].up = 0
    t[key] = leaf
    assert set(flows_to(dp, 100)) == {ip("192.0.2.4")}
    leaf.loc[2].up = 0
    t[key] = leaf
    assert itr(dp, P.ip_packet("10.1.0.10", "10.2.0.5")).retval == TC_ACT_SHOT
    assert dp.counters().drops["no_locator"] == 1


def test_priority_255_never_used(dp):
    dp.set_mapping(E("10.2.0.0/16"), [Rloc(ip("192.0.2.2"), 255, 100), Rloc(ip("192.0.2.3"), 9, 1)])
    assert set(flows_to(dp, 300)) == {ip("192.0.2.3")}
    dp.set_mapping(E("10.2.0.0/16"), [Rloc(ip("192.0.2.2"), 255, 100)])
    assert itr(dp, P.ip_packet("10.1.0.10", "10.2.0.5")).retval == TC_ACT_SHOT
    assert dp.counters().drops["no_locator"] == 1


def test_lsb_are_the_source_sites_own(dp):
    """RFC 9300 5.3: the locator-status bits describe the sending site's
    locators (the mapping of the prefix the inner source matches), not the
    destination's locator set."""
    dp.set_mapping(E("10.2.0.0/16"), [Rloc(ip("192.0.2.2")), Rloc(ip("192.0.2.3"), reachable=False),
                                      Rloc(ip("192.0.2.4"))])
    dp.add_local_eid(E("10.1.0.0/16"), lsb=0b110)            # our locator 0 down, 1 and 2 up
    o = P.split_encap(itr(dp, P.ip_packet("10.1.0.10", "10.2.0.5")).data)
    assert o.lisp_flags & 0x40 and o.lisp_word == 0b110
    dp.add_local_eid(E("10.1.9.0/24"), lsb=0b1)                # a more specific prefix of ours
    o = P.split_encap(itr(dp, P.ip_packet("10.1.9.1", "10.2.0.5")).data)
    assert o.lisp_word == 0b1
    # a source that is no EID of ours (PITR, RTR): no status to give, L=0
    dp.set_miss_action(MapAction.NATIVELY_FORWARD, petr=[Rloc(ip("192.0.2.5"))])
    o = P.split_encap(itr(dp, P.ip_packet("10.77.0.1", "10.2.0.5")).data)
    assert not o.lisp_flags & 0x40 and o.lisp_word == 0


# ---------- ETR ----------

def lisp_to_us(inner: bytes, iid=None, dst="192.0.2.1", **kw) -> bytes:
    return P.lisp_packet("192.0.2.2", dst, inner, iid=iid, **kw)


@pytest.mark.parametrize("l3", [
    P.ipv4("192.0.2.2", "192.0.2.1", P.udp("192.0.2.2", "192.0.2.1", 4342, 4342, b"\x10" + bytes(40))),
    P.ipv4("192.0.2.2", "192.0.2.1", P.udp("192.0.2.2", "192.0.2.1", 50000, 4342, b"\x20" + bytes(40))),
    P.ipv4("192.0.2.2", "192.0.2.1", P.tcp("192.0.2.2", "192.0.2.1", 1, 4341), proto=P.TCP),
    P.ipv4("192.0.2.2", "192.0.2.1", P.udp("192.0.2.2", "192.0.2.1", 1, 53, b"dns")),
    P.ipv6("2001:db8:1::2", "2001:db8:1::1", P.udp("2001:db8:1::2", "2001:db8:1::1", 4342, 4342, bytes(30))),
    # LISP data to an address that is not one of our RLOCs
    P.lisp_packet("192.0.2.2", "192.0.2.77", P.ip_packet("10.2.0.5", "10.1.0.10")),
    # NAT traversal: an Info-Reply / ECM'd Map-Notify to our data port 4341
    # (we sent the request from there, docs/nat.md) comes from port 4342
    P.ipv4("192.0.2.2", "192.0.2.1", P.udp("192.0.2.2", "192.0.2.1", 4342, 4341, b"\x80" + bytes(60))),
    P.ipv6("2001:db8:1::2", "2001:db8:1::1", P.udp("2001:db8:1::2", "2001:db8:1::1", 4342, 4341,
                                                   b"\x70" + bytes(60))),
], ids=["ctrl", "ctrl-ephemeral", "tcp", "dns", "ctrl6", "not-our-rloc", "ctrl-to-4341", "ctrl6-to-4341"])
def test_etr_passes_non_lisp_untouched(dp, l3):
    frame, res = etr(dp, l3)
    assert res.retval == TC_ACT_OK and res.data == frame
    c = dp.counters()
    assert c.decapsulated == 0 and c.total_drops == 0


def test_etr_drops_unknown_iid_and_non_local(dp):
    inner = P.ip_packet("10.2.0.5", "10.1.0.10")
    _, res = etr(dp, lisp_to_us(inner, iid=99))
    assert res.retval == TC_ACT_SHOT
    _, res = etr(dp, lisp_to_us(P.ip_packet("10.2.0.5", "10.66.0.1")))
    assert res.retval == TC_ACT_SHOT
    d = dp.counters().drops
    assert d["unknown_iid"] == 1 and d["not_local_eid"] == 1


def test_etr_accepts_iid_zero_with_i_bit(dp):
    _, res = etr(dp, lisp_to_us(P.ip_packet("10.2.0.5", "10.1.0.10"), iid=0))
    assert res.retval == TC_ACT_REDIRECT


def test_reencapsulation_when_enabled(dp):
    inner = P.ip_packet("10.2.0.5", "10.30.0.1")
    dp.set_mapping(E("10.30.0.0/16"), [Rloc(ip("192.0.2.4"))])
    _, res = etr(dp, lisp_to_us(inner))
    assert res.retval == TC_ACT_SHOT
    dp.set_reencap(True)
    _, res = etr(dp, lisp_to_us(inner))
    assert res.retval == TC_ACT_REDIRECT
    o = P.split_encap(res.data)
    # one router hop: the re-encapsulating ITR lowers the TTL once
    assert o.dst == ip("192.0.2.4") and o.src == ip("192.0.2.1") and o.inner == P.hop(inner)
    c = dp.counters()
    assert c.decapsulated == 1 and c.encapsulated == 1 and c.other["reencapsulated"] == 1


def test_reencapsulation_to_a_nated_xtr_and_misses(dp):
    """RTR (docs/nat.md): toward a NATed xTR's translated port from source
    port 4341; an unknown inner destination is a miss event (the RTR's ITR
    role resolves it), dropped and counted meanwhile."""
    dp.set_reencap(True)
    dp.set_mapping(E("10.30.0.0/16"), [Rloc(ip("192.0.2.4"), port=40123)])
    inner = P.ip_packet("10.2.0.5", "10.30.0.1")
    _, res = etr(dp, lisp_to_us(inner))
    assert res.retval == TC_ACT_REDIRECT
    o = P.split_encap(res.data)
    assert o.dst == ip("192.0.2.4") and o.dport == 40123 and o.sport == 4341
    _, res = etr(dp, lisp_to_us(P.ip_packet("10.2.0.5", "10.99.0.1")))
    assert res.retval == TC_ACT_SHOT
    (ev,) = dp.poll_misses(100)
    assert ev.eid == E("10.99.0.1/32")
    c = dp.counters()
    assert c.miss == 1 and c.drops["miss"] == 1 and c.other["reencapsulated"] == 2


VALID = [
    lisp_to_us(P.ip_packet("10.2.0.5", "10.1.0.10", b"z" * 40)),
    lisp_to_us(P.ip_packet("fd00:2::5", "fd00:1::10", b"z" * 40)),
    P.lisp_packet("2001:db8:1::2", "2001:db8:1::1", P.ip_packet("10.2.0.5", "10.1.0.10", b"z" * 40)),
]


def min_l3(l3: bytes) -> int:
    return 20 if l3[0] >> 4 == 4 else 40


def _check_no_corruption(frame: bytes, res) -> None:
    """Either passed untouched, or dropped: never a half-modified packet."""
    if res.retval == TC_ACT_OK:
        assert res.data == frame
    else:
        assert res.retval in (TC_ACT_SHOT, TC_ACT_REDIRECT)


@pytest.mark.parametrize("pkt", range(len(VALID)))
def test_every_truncation_is_safe(dp, pkt):
    full = VALID[pkt]
    # BPF_PROG_TEST_RUN itself refuses frames shorter than the IP header of
    # their ethertype, so truncation starts there.
    for n in range(min_l3(full), len(full)):
        frame, res = etr(dp, full[:n])
        _check_no_corruption(frame, res)
        assert res.retval != TC_ACT_REDIRECT, f"truncated to {n} bytes was forwarded"
    # every truncated LISP packet to our RLOC with a full UDP header is a counted drop
    assert dp.counters().decapsulated == 0


def test_lisp_header_length_lies_are_dropped(dp):
    base = bytearray(VALID[0])
    # UDP length larger than the packet
    bad = bytearray(base)
    struct.pack_into("!H", bad, 24, 2000)
    _, res = etr(dp, bytes(bad))
    assert res.retval == TC_ACT_SHOT
    # inner total length disagreeing with the UDP length
    bad = bytearray(base)
    struct.pack_into("!H", bad, 20 + 16 + 2, 30)
    _, res = etr(dp, bytes(bad))
    assert res.retval == TC_ACT_SHOT
    # inner version nibble 5
    bad = bytearray(base)
    bad[36] = 0x55
    _, res = etr(dp, bytes(bad))
    assert res.retval == TC_ACT_SHOT
    assert dp.counters().drops["malformed"] == 3


def test_random_bytes_never_crash(dp):
    rng = random.Random(4341)
    prefix4 = VALID[0][:28]      # outer IPv4 + UDP header to our RLOC, port 4341
    for _ in range(3000):
        tail = rng.randbytes(rng.randrange(0, 120))
        l3 = prefix4 + tail if rng.random() < 0.7 else rng.randbytes(rng.randrange(40, 140))
        frame, res = etr(dp, l3)
        _check_no_corruption(frame, res)
        if res.retval == TC_ACT_REDIRECT:
            # only if it really was a well-formed LISP packet for our site
            assert res.data[14] >> 4 in (4, 6)
    for _ in range(1000):
        inner = rng.randbytes(rng.randrange(40, 100))
        frame = P.eth(P.mac(EID_MAC), P.mac(HOST_MAC), rng.choice([P.ETH_IP, P.ETH_IP6])) + inner
        res = run_prog(dp.prog_fd("lisp_itr_ingress"), frame)
        assert res.retval in (TC_ACT_OK, TC_ACT_SHOT, TC_ACT_REDIRECT)


# ---------- MTU ----------

def test_too_big_ipv4_df_gets_frag_needed(dp):
    dp.set_path_mtu(1400)
    dp.set_mapping(E("10.2.0.0/16"), [Rloc(ip("192.0.2.2"))])
    ok = P.ip_packet("10.1.0.10", "10.2.0.5", b"a" * (1400 - 36 - 28))
    assert itr(dp, ok).retval == TC_ACT_REDIRECT
    big = P.ip_packet("10.1.0.10", "10.2.0.5", b"a" * (1400 - 36 - 28 + 1))
    res = itr(dp, big)
    assert res.retval == TC_ACT_REDIRECT
    out = res.data
    assert out[:6] == P.mac(HOST_MAC) and out[6:12] == P.mac(EID_MAC)
    icmp_ip = out[14:34]
    assert P.csum(icmp_ip) == 0 and icmp_ip[9] == P.ICMP
    assert ip(icmp_ip[12:16]) == ip("10.2.0.5") and ip(icmp_ip[16:20]) == ip("10.1.0.10")
    icmp = out[34:]
    assert (icmp[0], icmp[1]) == (3, 4) and P.csum(icmp) == 0
    assert struct.unpack("!H", icmp[6:8])[0] == 1400 - 36
    assert icmp[8:36] == big[:28]
    c = dp.counters()
    assert c.other["icmp_too_big"] == 1 and c.drops["too_big"] == 1 and c.encapsulated == 1


def test_too_big_ipv6_gets_packet_too_big(dp):
    dp.set_path_mtu(1500)
    dp.set_mapping(E("fd00:2::/32"), [Rloc(ip("2001:db8:1::2"))])
    big = P.ip_packet("fd00:1::10", "fd00:2::5", b"b" * (1500 - 56 - 48 + 1))
    res = itr(dp, big)
    out = res.data
    assert res.retval == TC_ACT_REDIRECT and out[12:14] == b"\x86\xdd"
    ip6 = out[14:54]
    assert ip6[6] == P.ICMP6 and ip(ip6[8:24]) == ip("fd00:2::5") and ip(ip6[24:40]) == ip("fd00:1::10")
    icmp = out[54:]
    assert icmp[0] == 2 and struct.unpack("!I", icmp[4:8])[0] == 1500 - 56
    pseudo = ip6[8:40] + struct.pack("!I3xB", len(icmp), P.ICMP6)
    assert P.csum(pseudo + icmp) == 0
    assert icmp[8:] == big[:128]


def test_gso_packet_judged_by_segment_size(dp):
    dp.set_path_mtu(1500)
    dp.set_mapping(E("10.2.0.0/16"), [Rloc(ip("192.0.2.2"))])
    big = P.ipv4("10.1.0.10", "10.2.0.5", P.tcp("10.1.0.10", "10.2.0.5", 1, 2, b"c" * 3000))
    itr(dp, big, gso_size=1400, gso_segs=3)
    c = dp.counters()
    assert c.other["icmp_too_big"] == 0 and c.drops["too_big"] == 0
    itr(dp, big, gso_size=1480, gso_segs=3)
    assert dp.counters().other["icmp_too_big"] == 1


def test_egress_program_reflects_icmp_to_local_stack(dp):
    """Mobile node: the EID device's egress program encapsulates local traffic
    and turns too-big packets into an ICMP delivered back to the host."""
    dp.set_mapping(E("10.2.0.0/16"), [Rloc(ip("192.0.2.2"))])
    inner = P.ip_packet("10.1.0.10", "10.2.0.5")
    res = itr(dp, inner, prog="lisp_itr_egress")
    assert res.retval == TC_ACT_REDIRECT and P.split_encap(res.data).inner == inner
    dp.set_path_mtu(576)
    res = itr(dp, P.ip_packet("10.1.0.10", "10.2.0.5", b"d" * 600), prog="lisp_itr_egress")
    assert res.retval == TC_ACT_REDIRECT and res.data[14 + 20] == 3


# ---------- counters, pins ----------

def test_mapping_counters_and_replacement_keep_id(dp):
    eid = E("10.2.0.0/16")
    dp.set_mapping(eid, [Rloc(ip("192.0.2.2"))])
    inner = P.ip_packet("10.1.0.10", "10.2.0.5", b"e" * 10)
    for _ in range(3):
        itr(dp, inner)
    assert dp.mapping_counters(eid) == (3, 3 * len(inner))
    dp.set_mapping(eid, [Rloc(ip("192.0.2.3"))])
    itr(dp, inner)
    assert dp.mapping_counters(eid) == (4, 4 * len(inner))
    dp.delete_mapping(eid)
    assert itr(dp, inner).retval == TC_ACT_SHOT
    assert dp.counters().encapsulated == 4


# ---------- misses carry the packets they drop (roles/holdq.py) ----------

def test_dropped_miss_carries_its_packet(dp):
    inner = P.ip_packet("10.1.0.10", "10.70.0.1")
    assert itr(dp, inner).retval == TC_ACT_SHOT            # miss action drop
    (ev,) = dp.poll_misses(100)
    assert ev.packet == inner                              # from the IP header, exactly
    inner6 = P.ip_packet("fd00:1::10", "fd00:70::1")
    assert itr(dp, inner6).retval == TC_ACT_SHOT
    (ev,) = dp.poll_misses(100)
    assert ev.packet == inner6


def test_forwarded_miss_does_not_carry_its_packet(dp):
    dp.set_miss_action(MapAction.NATIVELY_FORWARD)
    assert itr(dp, P.ip_packet("10.1.0.10", "10.71.0.1")).retval == TC_ACT_OK
    (ev,) = dp.poll_misses(100)
    assert ev.packet == b""                                # delivered already: never twice


def test_oversized_miss_is_not_carried(dp):
    big = P.ip_packet("10.1.0.10", "10.72.0.1", payload=b"x" * 1600)
    assert itr(dp, big).retval == TC_ACT_SHOT
    (ev,) = dp.poll_misses(100)
    assert ev.packet == b"" and str(ev.eid) == "10.72.0.1/32"
