"""The ITR program in PITR mode, and an xTR's ITR that sends negative
"natively-forward" answers to its Proxy-ETRs (RFC 6832 sections 5 and 6)."""
from __future__ import annotations

import ipaddress

from lispctl.datapath.testrun import TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, run_prog, skb_ctx
from lispctl.mapping.types import EidPrefix, MapAction, Rloc
from tests.datapath import packets as P
from tests.datapath.conftest import EID_MAC, HOST_MAC

ip = ipaddress.ip_address
E = EidPrefix.parse


def itr(dp, lab, inner: bytes):
    et = P.ETH_IP if inner[0] >> 4 == 4 else P.ETH_IP6
    frame = P.eth(P.mac(EID_MAC), P.mac(HOST_MAC), et) + inner
    return run_prog(dp.prog_fd("lisp_itr_ingress"), frame, ctx=skb_ctx(ifindex=lab.eid_if))


def test_pitr_leaves_everything_outside_the_map_cache_alone(dp, lab):
    dp.set_pitr(True)
    try:
        dp.set_mapping(E("10.50.0.0/16"), [], MapAction.SEND_MAP_REQUEST)   # an aggregate
        dp.set_mapping(E("fd00:50::/32"), [], MapAction.SEND_MAP_REQUEST)
        for inner in (P.ip_packet("203.0.113.7", "10.60.0.1"), P.ip_packet("2001:db8:9::7", "fd00:60::1")):
            res = itr(dp, lab, inner)
            assert res.retval == TC_ACT_OK and res.data[14:] == inner
        assert dp.poll_misses(50) == []
        c = dp.counters()
        assert c.other["pitr_passed"] == 2 and c.miss == 0 and c.total_drops == 0
        # inside an aggregate: a miss (event with the legacy source), miss action drop
        assert itr(dp, lab, P.ip_packet("203.0.113.7", "10.50.1.2")).retval == TC_ACT_SHOT
        assert itr(dp, lab, P.ip_packet("2001:db8:9::7", "fd00:50::2")).retval == TC_ACT_SHOT
        evs = dp.poll_misses(100)
        assert {e.eid for e in evs} == {E("10.50.1.2/32"), E("fd00:50::2/128")}
        # an answer for a more specific prefix: encapsulated (6 over 4 too)
        dp.set_mapping(E("10.50.1.0/24"), [Rloc(ip("192.0.2.2"))])
        dp.set_mapping(E("fd00:50::/48"), [Rloc(ip("192.0.2.2"))])
        for inner in (P.ip_packet("203.0.113.7", "10.50.1.2"), P.ip_packet("2001:db8:9::7", "fd00:50::2")):
            res = itr(dp, lab, inner)
            assert res.retval == TC_ACT_REDIRECT
            o = P.split_encap(res.data)
            assert o.dst == ip("192.0.2.2") and o.src == ip("192.0.2.1") and o.inner == P.hop(inner)   # routed: TTL - 1
        # a negative natively-forward answer inside the aggregate: not encapsulated
        dp.set_mapping(E("10.50.2.0/24"), [], MapAction.NATIVELY_FORWARD)
        assert itr(dp, lab, P.ip_packet("203.0.113.7", "10.50.2.9")).retval == TC_ACT_OK
    finally:
        dp.set_pitr(False)
    assert not dp.config()["pitr"]


def test_natively_forward_answers_go_to_the_petr(dp, lab):
    inner = P.ip_packet("10.1.0.10", "198.18.0.2")
    dp.set_mapping(E("198.18.0.0/15"), [], MapAction.NATIVELY_FORWARD)
    res = itr(dp, lab, inner)
    assert res.retval == TC_ACT_OK and res.data[14:] == inner          # no PETR: native
    dp.set_miss_action(MapAction.NO_ACTION, petr=[Rloc(ip("192.0.2.5"))])
    res = itr(dp, lab, inner)
    assert res.retval == TC_ACT_REDIRECT
    o = P.split_encap(res.data)
    assert o.dst == ip("192.0.2.5") and o.inner == P.hop(inner)
    c = dp.counters()
    assert c.other["petr"] == 1 and c.other["native"] == 1 and c.miss == 0
    # other negative actions still drop
    dp.set_mapping(E("198.18.0.0/15"), [], MapAction.DROP)
    assert itr(dp, lab, inner).retval == TC_ACT_SHOT


def test_pitr_on_one_uplink_etr_hands_internet_traffic_to_the_itr(dp, lab):
    """PITR whose Internet-facing interface is its RLOC interface: the ETR
    program passes what is not LISP for us to the ITR program (tail call)."""
    from tests.datapath.conftest import PEER_MAC, RLOC_MAC
    dp.set_pitr(True)
    try:
        dp.set_mapping(E("10.50.0.0/16"), [], MapAction.SEND_MAP_REQUEST)
        dp.set_mapping(E("10.50.1.0/24"), [Rloc(ip("192.0.2.2"))])

        def etr(inner: bytes):
            frame = P.eth(P.mac(RLOC_MAC), P.mac(PEER_MAC["192.0.2.3"]), P.ETH_IP) + inner
            return run_prog(dp.prog_fd("lisp_etr_ingress"), frame, ctx=skb_ctx(ifindex=lab.rl_if))
        inner = P.ip_packet("203.0.113.7", "10.50.1.2")
        res = etr(inner)
        assert res.retval == TC_ACT_REDIRECT
        o = P.split_encap(res.data)
        assert o.dst == ip("192.0.2.2") and o.inner == P.hop(inner)
        other = P.ip_packet("203.0.113.7", "192.0.2.1")           # to this host: untouched
        res = etr(other)
        assert res.retval == TC_ACT_OK and res.data[14:] == other
        c = dp.counters()
        assert c.encapsulated == 1 and c.other["pitr_passed"] == 1 and c.decapsulated == 0
    finally:
        dp.set_pitr(False)
    # not a PITR: the ETR leaves non-LISP packets alone, without the ITR
    res = run_prog(dp.prog_fd("lisp_etr_ingress"),
                   P.eth(P.mac(RLOC_MAC), P.mac(PEER_MAC["192.0.2.3"]), P.ETH_IP) +
                   P.ip_packet("203.0.113.7", "10.50.1.2"), ctx=skb_ctx(ifindex=lab.rl_if))
    assert res.retval == TC_ACT_OK and dp.counters().encapsulated == 1
