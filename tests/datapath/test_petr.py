"""Proxy-ETR in the BPF data plane (RFC 6832 section 6): decapsulation for
destinations that are not local EIDs, native forwarding through the FIB,
the petr.accept-eids allow-list and the local-only guard. Exact output bytes
through BPF_PROG_TEST_RUN in the module's namespace (tests/datapath/conftest)."""
from __future__ import annotations

import ipaddress

import pytest

from lispctl.datapath.testrun import TC_ACT_REDIRECT, TC_ACT_SHOT, skb_ctx, run_prog
from lispctl.mapping.types import EidPrefix
from tests.datapath import packets as P
from tests.datapath.conftest import EID_MAC, PEER_MAC, RLOC_MAC

ip = ipaddress.ip_address

# remote EID (inner source), legacy destination (connected on eid0 here,
# and NOT a local EID of the PETR), ITR's RLOC, our RLOC
CASES = {
    "4in4": ("10.9.0.5", "10.1.0.10", "192.0.2.2", "192.0.2.1"),
    "6in6": ("fd00:9::5", "fd00:1::10", "2001:db8:1::2", "2001:db8:1::1"),
    "6in4": ("fd00:9::5", "fd00:1::10", "192.0.2.2", "192.0.2.1"),
    "4in6": ("10.9.0.5", "10.1.0.10", "2001:db8:1::2", "2001:db8:1::1"),
}


@pytest.fixture
def petr(loaded):
    """A PETR: local RLOCs, no local EIDs."""
    d = loaded
    d.detach()
    d.reset()
    d.add_local_rloc(ip("192.0.2.1"))
    d.add_local_rloc(ip("2001:db8:1::1"))
    yield d
    d.set_petr(False)


def frame(src, dst, rloc, local, iid=None, ttl=50, outer_ttl=64):
    inner = P.ip_packet(src, dst, b"p" * 40, ttl=ttl) if ip(src).version == 4 else \
        P.ip_packet(src, dst, b"p" * 40, hlim=ttl)
    et = P.ETH_IP if ip(local).version == 4 else P.ETH_IP6
    return inner, P.eth(P.mac(RLOC_MAC), P.mac(PEER_MAC[rloc]), et) + \
        P.lisp_packet(rloc, local, inner, iid=iid, ttl=outer_ttl)


def run_etr(dp, lab, data):
    return run_prog(dp.prog_fd("lisp_etr_ingress"), data, ctx=skb_ctx(ifindex=lab.rl_if))


def test_without_petr_role_non_local_eid_dropped(petr, lab):
    _, data = frame(*CASES["4in4"])
    petr.accept_iid(0)
    assert run_etr(petr, lab, data).retval == TC_ACT_SHOT
    assert petr.counters().drops["not_local_eid"] == 1


@pytest.mark.parametrize("case", sorted(CASES))
def test_petr_forwards_inner_natively(petr, lab, case):
    src, dst, rloc, local = CASES[case]
    petr.set_petr(True)
    inner, data = frame(src, dst, rloc, local)
    res = run_etr(petr, lab, data)
    assert res.retval == TC_ACT_REDIRECT
    et = P.ETH_IP if ip(dst).version == 4 else P.ETH_IP6
    # the PETR routes the inner packet: TTL - 1 (issue 13 section 4)
    assert res.data == P.eth(P.mac(PEER_MAC[dst]), P.mac(EID_MAC), et) + P.hop(inner)
    c = petr.counters()
    assert c.decapsulated == 1 and c.other["petr_forwarded"] == 1 and c.total_drops == 0
    assert petr.config()["petr"] and not petr.config()["petr_acl"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_accept_eids_allow_list(petr, lab, case):
    src, dst, rloc, local = CASES[case]
    allowed = "10.9.0.0/16" if ip(src).version == 4 else "fd00:9::/32"
    other = "10.8.0.0/16" if ip(src).version == 4 else "fd00:8::/32"
    petr.set_petr(True, [EidPrefix.parse(other)])
    _, data = frame(src, dst, rloc, local)
    assert run_etr(petr, lab, data).retval == TC_ACT_SHOT
    c = petr.counters()
    assert c.drops["petr_src_denied"] == 1 and c.decapsulated == 0
    petr.set_petr(True, [EidPrefix.parse(other), EidPrefix.parse(allowed)])
    assert run_etr(petr, lab, data).retval == TC_ACT_REDIRECT
    assert petr.counters().other["petr_forwarded"] == 1


def test_accept_eids_is_per_instance(petr, lab):
    petr.set_petr(True, [EidPrefix.parse("10.9.0.0/16", 7)])
    _, d0 = frame(*CASES["4in4"])
    assert run_etr(petr, lab, d0).retval == TC_ACT_SHOT       # iid 0: not in the list
    _, d7 = frame(*CASES["4in4"], iid=7)
    assert run_etr(petr, lab, d7).retval == TC_ACT_REDIRECT
    _, d8 = frame(*CASES["4in4"], iid=8)
    assert run_etr(petr, lab, d8).retval == TC_ACT_SHOT       # instance not accepted at all
    d = petr.counters().drops
    assert d["petr_src_denied"] == 1 and d["unknown_iid"] == 1


@pytest.mark.parametrize("src,dst", [
    ("10.9.0.5", "127.0.0.1"), ("10.9.0.5", "169.254.1.1"), ("10.9.0.5", "224.0.0.5"),
    ("10.9.0.5", "255.255.255.255"), ("10.9.0.5", "0.0.0.0"), ("127.0.0.1", "10.1.0.10"),
    ("fd00:9::5", "::1"), ("fd00:9::5", "fe80::1"), ("fd00:9::5", "ff02::1"), ("fd00:9::5", "::"),
    ("fd00:9::5", "::ffff:10.1.0.10"), ("fe80::5", "fd00:1::10"),
])
def test_never_decapsulates_to_local_only(petr, lab, src, dst):
    petr.set_petr(True)
    _, data = frame(src, dst, "192.0.2.2", "192.0.2.1")
    assert run_etr(petr, lab, data).retval == TC_ACT_SHOT
    c = petr.counters()
    assert c.drops["petr_local_only"] == 1 and c.decapsulated == 0


@pytest.mark.parametrize("src,dst", [
    ("10.9.0.5", "203.0.113.9"), ("fd00:9::5", "2001:db8:99::9"),    # no route in the lab ns
    # this host's own addresses: a PETR relays, it does not deliver to itself
    ("10.9.0.5", "10.1.0.254"), ("fd00:9::5", "fd00:1::fe"), ("10.9.0.5", "192.0.2.1"),
])
def test_no_route_or_this_host_dropped(petr, lab, src, dst):
    petr.set_petr(True)
    _, data = frame(src, dst, "192.0.2.2", "192.0.2.1")
    assert run_etr(petr, lab, data).retval == TC_ACT_SHOT
    c = petr.counters()
    assert c.drops["no_route"] == 1 and c.decapsulated == 0


def test_local_eids_still_delivered_with_petr(petr, lab):
    """A PxTR that is also an ETR for a site: local EIDs take the ETR path."""
    petr.set_petr(True, [EidPrefix.parse("10.8.0.0/16")])
    petr.add_local_eid(EidPrefix.parse("10.1.0.0/16"))
    _, data = frame(*CASES["4in4"])                  # source outside accept-eids, but local dst
    assert run_etr(petr, lab, data).retval == TC_ACT_REDIRECT
    c = petr.counters()
    assert c.decapsulated == 1 and c.other["petr_forwarded"] == 0


def test_petr_off_again(petr, lab):
    petr.set_petr(True, [EidPrefix.parse("10.9.0.0/16")])
    petr.set_petr(False)
    assert not petr.config()["petr"]
    _, data = frame(*CASES["4in4"])
    assert run_etr(petr, lab, data).retval == TC_ACT_SHOT
    assert petr.counters().drops["unknown_iid"] == 1
    assert not list(petr.table("petr_accept4").keys())


def test_xdp_etr_applies_the_same_petr_rules(petr, lab):
    """The XDP ETR shares etr_check: denied sources are dropped (and counted)
    there already; accepted PETR packets go on untouched to the tc ETR."""
    from lispctl.datapath.testrun import XDP_DROP, XDP_PASS, xdp_ctx
    petr.set_petr(True, [EidPrefix.parse("10.8.0.0/16")])
    _, data = frame(*CASES["4in4"])
    res = run_prog(petr.prog_fd("lisp_etr_xdp"), data, ctx=xdp_ctx(len(data), lab.rl_if))
    assert res.retval == XDP_DROP and petr.counters().drops["petr_src_denied"] == 1
    petr.set_petr(True)
    res = run_prog(petr.prog_fd("lisp_etr_xdp"), data, ctx=xdp_ctx(len(data), lab.rl_if))
    assert res.retval == XDP_PASS and res.data == data
    assert petr.counters().decapsulated == 0
