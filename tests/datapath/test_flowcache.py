"""The ITR's per-CPU flow cache (bpf/lisp_flowcache.h) never outlives a
map-cache change: after the cache was warmed for a destination, the very
next packet sees a new locator set, a deleted entry, a more-specific prefix
(single or bulk-loaded) and its removal."""
from __future__ import annotations

import ipaddress

import pytest

from lispctl.datapath.testrun import TC_ACT_REDIRECT, XDP_REDIRECT, run_prog, skb_ctx, xdp_ctx
from lispctl.mapping.bulkfile import parse
from lispctl.mapping.types import EidPrefix, MapAction, Rloc
from tests.datapath import packets as P
from tests.datapath.conftest import EID_MAC, HOST_MAC, PEER_MAC, RLOC_MAC

ip = ipaddress.ip_address

# inner src, inner dst, covering prefix, more-specific prefix, three locators
FAMILIES = {
    4: ("10.1.0.10", "10.2.7.5", "10.2.0.0/16", "10.2.7.0/24", "192.0.2.2", "192.0.2.3", "192.0.2.4"),
    6: ("fd00:1::10", "fd00:2:0:7::5", "fd00:2::/32", "fd00:2:0:7::/64", "2001:db8:1::2", "2001:db8:1::3",
        "192.0.2.5"),
}


NOT_SENT = "not encapsulated"


def _program(dp, lab, side, prog):
    """(fd, ctx(frame), verdict when forwarded) of the ITR or ETR as a tc or
    XDP program; the XDP one's redirect target is marked as such."""
    ifindex = lab.eid_if if side == "itr" else lab.rl_if
    if prog == "tc":
        return dp.prog_fd(f"lisp_{side}_ingress"), lambda frame: skb_ctx(ifindex=ifindex), TC_ACT_REDIRECT
    dp.set_xdp_redirect("rl0" if side == "itr" else "eid0", True)
    return dp.prog_fd(f"lisp_{side}_xdp"), lambda frame: xdp_ctx(len(frame), ifindex), XDP_REDIRECT


@pytest.mark.parametrize("prog", ["tc", "xdp"])
@pytest.mark.parametrize("family", [4, 6])
def test_next_packet_sees_every_map_cache_change(dp, lab, one_cpu, family, prog):
    src, dst, wide, narrow, a, b, c = FAMILIES[family]
    inner = P.ip_packet(src, dst, b"x" * 64)
    frame = P.eth(P.mac(EID_MAC), P.mac(HOST_MAC), P.ETH_IP if family == 4 else P.ETH_IP6) + inner
    fd, ctx_of, sent = _program(dp, lab, "itr", prog)
    ctx = ctx_of(frame)

    def send():
        res = run_prog(fd, frame, ctx=ctx)
        return P.split_encap(res.data).dst if res.retval == sent else NOT_SENT

    def warm(expect):
        for _ in range(3):
            assert send() == expect

    eid = EidPrefix.parse(wide)
    dp.set_mapping(eid, [Rloc(ip(a))])
    warm(ip(a))
    dp.set_mapping(eid, [Rloc(ip(b))])                      # new locators, same mapping id
    assert send() == ip(b)
    warm(ip(b))
    dp.set_mapping(eid, [], MapAction.DROP)                  # new action
    assert send() == NOT_SENT
    if prog == "tc":                                         # the entry's drop, not a stale id's
        assert dp.counters().drops.get("negative") == 1
    dp.set_mapping(eid, [Rloc(ip(b))])
    warm(ip(b))
    more = EidPrefix.parse(narrow)
    dp.set_mapping(more, [Rloc(ip(c))])                      # more-specific prefix added
    assert send() == ip(c)
    warm(ip(c))
    dp.delete_mapping(more)                                  # ... and removed
    assert send() == ip(b)
    warm(ip(b))
    dp.load_bulk("t", parse(f"{narrow} {c}\n"))              # bulk-loaded more-specific
    assert send() == ip(c)
    warm(ip(c))
    dp.unload_bulk("t")
    assert send() == ip(b)
    warm(ip(b))
    site = EidPrefix.parse(narrow)
    dp.add_local_eid(site)                                   # now a local EID: left alone
    assert send() == NOT_SENT
    dp.remove_local_eid(site)                                # ... and no longer
    assert send() == ip(b)
    warm(ip(b))
    dp.set_mapping(eid, [Rloc(ip(a)), Rloc(ip(b), reachable=False)])   # one usable of two: kept in the slot
    warm(ip(a))
    dp.set_mapping(eid, [Rloc(ip(a), reachable=False), Rloc(ip(b))])   # the other one up
    assert send() == ip(b)
    warm(ip(b))
    dp.delete_mapping(eid)                                   # deleted: a miss (miss action drop)
    misses = dp.counters().miss
    assert send() == NOT_SENT
    assert prog != "tc" or dp.counters().miss == misses + 1
    dp.set_mapping(eid, [Rloc(ip(a))])                       # a miss is never cached
    assert send() == ip(a)
    warm(ip(a))
    dp.reset()                                               # flush
    assert send() == NOT_SENT


@pytest.mark.parametrize("prog", ["tc", "xdp"])
@pytest.mark.parametrize("family", [4, 6])
def test_next_packet_carries_new_lsb(dp, lab, one_cpu, family, prog):
    """The XDP ITR's slot remembers the source site's locator-status bits:
    new bits for the source's prefix, and another source to the same
    destination, are in the very next packet (the tc ITR: same rule)."""
    src, dst, wide, _, a, _, _ = FAMILIES[family]
    src2, site, site2 = ("10.1.9.1", "10.1.0.0/16", "10.1.9.0/24") if family == 4 else \
        ("fd00:1:9::1", "fd00:1::/32", "fd00:1:9::/48")
    fd, ctx_of, sent = _program(dp, lab, "itr", prog)

    def lsb(s):
        frame = P.eth(P.mac(EID_MAC), P.mac(HOST_MAC), P.ETH_IP if family == 4 else P.ETH_IP6) + \
            P.ip_packet(s, dst, b"x" * 64)
        res = run_prog(fd, frame, ctx=ctx_of(frame))
        assert res.retval == sent
        o = P.split_encap(res.data)
        return o.lisp_word if o.lisp_flags & 0x40 else None

    dp.set_mapping(EidPrefix.parse(wide), [Rloc(ip(a))])
    dp.add_local_eid(EidPrefix.parse(site), lsb=0b1)
    dp.add_local_eid(EidPrefix.parse(site2), lsb=0b100)
    assert [lsb(src) for _ in range(3)] == [0b1] * 3
    dp.add_local_eid(EidPrefix.parse(site), lsb=0b10)       # same prefix, new bits
    assert lsb(src) == 0b10
    assert lsb(src2) == 0b100                               # another source, same destination
    assert lsb(src) == 0b10
    dp.remove_local_eid(EidPrefix.parse(site2))             # no longer ours: the covering prefix's bits
    assert lsb(src2) == 0b10


@pytest.mark.parametrize("prog", ["tc", "xdp"])
@pytest.mark.parametrize("family", [4, 6])
def test_etr_next_packet_sees_local_eid_change(dp, lab, one_cpu, family, prog):
    """The ETRs ask the flow cache whether the inner destination is local:
    a destination that stops being a local EID is not decapsulated from the
    very next packet on, and one that becomes local again is."""
    rloc, local, src, dst, site = ("192.0.2.2", "192.0.2.1", "10.2.0.5", "10.1.0.10", "10.1.0.0/16") \
        if family == 4 else ("2001:db8:1::2", "2001:db8:1::1", "fd00:2::5", "fd00:1::10", "fd00:1::/32")
    frame = P.eth(P.mac(RLOC_MAC), P.mac(PEER_MAC[rloc]), P.ETH_IP if family == 4 else P.ETH_IP6) + \
        P.lisp_packet(rloc, local, P.ip_packet(src, dst, b"x" * 64))
    fd, ctx_of, sent = _program(dp, lab, "etr", prog)
    ctx = ctx_of(frame)

    def decapsulated():
        return run_prog(fd, frame, ctx=ctx).retval == sent

    assert all(decapsulated() for _ in range(3))
    drops = dp.counters().drops.get("not_local_eid", 0)
    dp.remove_local_eid(EidPrefix.parse(site))
    assert not decapsulated()
    if prog == "tc":
        assert dp.counters().drops.get("not_local_eid", 0) == drops + 1
    dp.add_local_eid(EidPrefix.parse(site))
    assert decapsulated()


def test_generation_bumped_by_every_writer(dp):
    def gen():
        t = dp.table("flow_gen")
        return t[t.Key(0)].value

    g = gen()
    assert g >= 1                       # 0 would disable the cache
    eid = EidPrefix.parse("10.9.0.0/16")
    dp.set_mapping(eid, [Rloc(ip("192.0.2.2"))])
    assert gen() > g
    g = gen()
    dp.delete_mapping(eid)
    assert gen() > g
    g = gen()
    dp.load_bulk("t", parse("10.8.0.0/16 192.0.2.2\n"))
    assert gen() > g
    g = gen()
    dp.unload_bulk("t")
    assert gen() > g


def test_fixed_choice_is_the_kernels_pick_for_every_flow():
    """locsets.fixed_choice: the locator every flow hash picks (one usable
    locator, wherever it sits), or 0 when flows spread or none is usable."""
    from lispctl.datapath.locsets import build_locator_set, fixed_choice

    def fixed(*rlocs):
        return fixed_choice(build_locator_set(rlocs, 8, 4, 64), 64)

    a, b, c = ip("192.0.2.2"), ip("192.0.2.3"), ip("192.0.2.4")
    assert fixed(Rloc(a)) == 1
    assert fixed(Rloc(a), Rloc(b)) == 0                                  # equal priority: by flow
    assert fixed(Rloc(a, priority=1), Rloc(b, priority=2)) == 1          # the best priority only
    assert fixed(Rloc(a, reachable=False), Rloc(b), Rloc(c, priority=5)) == 2
    assert fixed(Rloc(a, priority=255), Rloc(b)) == 1                    # 255 is left out: b is index 0
    assert fixed(Rloc(a, reachable=False)) == 0                          # nothing usable
    assert fixed(Rloc(a, priority=1), Rloc(b, priority=1, weight=0), Rloc(c, priority=2)) == 1   # b: no slot
