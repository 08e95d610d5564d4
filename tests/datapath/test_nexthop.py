"""The per-CPU next-hop cache (bpf/lisp_nexthop.h) in front of bpf_fib_lookup.

After a neighbour's MAC, a route or a policy rule changes in the namespace:
- with the daemon's invalidation (a real rtnetlink watcher, the
  InterfaceWatcher the daemon opens, and the NextHopSync it drives), the
  very next packet follows the new next hop;
- with nothing watching, a cached next hop is used for at most about one
  second after it was looked up.
For the tc and XDP ITR (next hop of the locator) and the tc and XDP ETR (of
the inner destination), both families. The packet right after the change
still takes the old next hop: the cache is in use, so the tests show what
ends it."""
from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass

import pytest

from lispctl.datapath.testrun import TC_ACT_REDIRECT, XDP_REDIRECT, run_prog, skb_ctx, xdp_ctx
from lispctl.mapping.types import EidPrefix, Rloc
from tests.datapath import packets as P
from tests.datapath.conftest import EID_MAC, HOST_MAC, PEER_MAC, RLOC_MAC

ip = ipaddress.ip_address
NEW_MAC = "02:00:00:00:0e:0e"
# LISP_NH_MAX_AGE is 100 jiffies: 1 s at HZ=100, 0.1 s at HZ=1000
MAX_AGE, MIN_AGE = 1.0, 0.1


@dataclass
class Case:
    frame: bytes
    fd: int
    ctx: bytes
    sent: int
    next_hop: str           # the neighbour the packet goes to
    other: str              # another neighbour on the same link (a route change's new gateway)
    dev: int                # their interface


def _case(dp, lab, prog: str, family: int) -> Case:
    itr = prog.endswith("itr")
    if itr:
        src, dst, eid = ("10.1.0.10", "10.2.0.5", "10.2.0.0/16") if family == 4 else \
            ("fd00:1::10", "fd00:2::5", "fd00:2::/32")
        loc, other = ("192.0.2.2", "192.0.2.3") if family == 4 else ("2001:db8:1::2", "2001:db8:1::3")
        dp.set_mapping(EidPrefix.parse(eid), [Rloc(ip(loc))])
        frame = P.eth(P.mac(EID_MAC), P.mac(HOST_MAC), P.ETH_IP if family == 4 else P.ETH_IP6) + \
            P.ip_packet(src, dst, b"x" * 64)
        hop, dev, in_if = loc, lab.rl_if, lab.eid_if
        dp.set_xdp_redirect("rl0", True)
    else:
        src, dst = ("10.2.0.5", "10.1.0.10") if family == 4 else ("fd00:2::5", "fd00:1::10")
        other = "10.1.0.11" if family == 4 else "fd00:1::11"
        rloc, local = ("192.0.2.2", "192.0.2.1") if family == 4 else ("2001:db8:1::2", "2001:db8:1::1")
        frame = P.eth(P.mac(RLOC_MAC), P.mac(PEER_MAC[rloc]), P.ETH_IP if family == 4 else P.ETH_IP6) + \
            P.lisp_packet(rloc, local, P.ip_packet(src, dst, b"x" * 64))
        hop, dev, in_if = dst, lab.eid_if, lab.rl_if
        dp.set_xdp_redirect("eid0", True)
    name = {"tc_itr": "lisp_itr_ingress", "xdp_itr": "lisp_itr_xdp",
            "tc_etr": "lisp_etr_ingress", "xdp_etr": "lisp_etr_xdp"}[prog]
    if prog.startswith("tc"):
        ctx, sent = skb_ctx(ifindex=in_if), TC_ACT_REDIRECT
    else:
        ctx, sent = xdp_ctx(len(frame), in_if), XDP_REDIRECT
    return Case(frame, dp.prog_fd(name), ctx, sent, hop, other, dev)


def _dmac(case: Case) -> str:
    res = run_prog(case.fd, case.frame, ctx=case.ctx)
    assert res.retval == case.sent, "not forwarded"
    return ":".join(f"{b:02x}" for b in res.data[:6])


TABLE = 4242           # the policy-routing table of the "rule" change


class _Change:
    """One change of the namespace's forwarding state, undone afterwards:
    "neigh" the next hop's MAC, "route" a host route via another neighbour,
    "rule" a policy rule sending the destination to a table that has one."""

    def __init__(self, case: Case, kind: str) -> None:
        from pyroute2 import IPRoute
        self.ipr = IPRoute()
        self.case, self.kind = case, kind
        self.added_other = False
        if case.other not in PEER_MAC:           # the ETR's second site host
            self.ipr.neigh("add", dst=case.other, lladdr=NEW_MAC, ifindex=case.dev, state=0x80)
            self.added_other = True
        self.expect = NEW_MAC if kind == "neigh" or self.added_other else PEER_MAC[case.other]
        self.family = 2 if ip(case.next_hop).version == 4 else 10
        self.plen = 32 if self.family == 2 else 128
        if kind == "rule":                       # the table first: only the rule changes later
            self.ipr.route("add", dst=f"{case.next_hop}/{self.plen}", gateway=case.other, oif=case.dev,
                           table=TABLE)

    def apply(self) -> None:
        c = self.case
        if self.kind == "neigh":
            self.ipr.neigh("replace", dst=c.next_hop, lladdr=NEW_MAC, ifindex=c.dev, state=0x80)
        elif self.kind == "route":
            self.ipr.route("add", dst=f"{c.next_hop}/{self.plen}", gateway=c.other, oif=c.dev)
        else:
            self.ipr.rule("add", family=self.family, dst=c.next_hop, dst_len=self.plen, table=TABLE,
                          priority=100)

    def undo(self) -> None:
        c = self.case
        try:
            if self.kind == "neigh":
                self.ipr.neigh("replace", dst=c.next_hop, lladdr=PEER_MAC[c.next_hop], ifindex=c.dev, state=0x80)
            elif self.kind == "rule":
                for undo in (lambda: self.ipr.rule("del", family=self.family, dst=c.next_hop,
                                                   dst_len=self.plen, table=TABLE, priority=100),
                             lambda: self.ipr.route("del", dst=f"{c.next_hop}/{self.plen}", gateway=c.other,
                                                    oif=c.dev, table=TABLE)):
                    try:
                        undo()
                    except Exception:
                        pass
            else:
                plen = 32 if ip(c.next_hop).version == 4 else 128
                try:
                    self.ipr.route("del", dst=f"{c.next_hop}/{plen}", gateway=c.other, oif=c.dev)
                except Exception:
                    pass
            if self.added_other:
                self.ipr.neigh("del", dst=c.other, ifindex=c.dev)
        finally:
            self.ipr.close()


PROGS = ["tc_itr", "xdp_itr", "tc_etr", "xdp_etr"]


@pytest.mark.parametrize("kind", ["neigh", "route", "rule"])
@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("prog", PROGS)
def test_next_packet_follows_netlink_change(dp, lab, one_cpu, prog, family, kind):
    from lispctl.daemon.ifwatch import NextHopSync
    from lispctl.net.watch import InterfaceWatcher

    case = _case(dp, lab, prog, family)
    change = _Change(case, kind)
    sync = NextHopSync(dp)
    with InterfaceWatcher(track_gateways=False, track_forwarding=True) as watcher:
        try:
            watcher.drain()
            sync(watcher)                        # whatever the setup changed
            old = PEER_MAC[case.next_hop]
            t_fill = time.monotonic()
            for _ in range(3):
                assert _dmac(case) == old
            change.apply()
            if time.monotonic() - t_fill < MIN_AGE / 2:
                assert _dmac(case) == old        # cached: nothing told the data plane yet
            # the daemon's loop: netlink notification -> next-hop generation
            watcher.drain()
            assert sync(watcher)
            assert _dmac(case) == change.expect  # the very next packet
        finally:
            change.undo()
            dp.next_hops_changed()


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("prog", PROGS)
def test_without_daemon_staleness_is_bounded(dp, lab, one_cpu, prog, family):
    case = _case(dp, lab, prog, family)
    change = _Change(case, "neigh")
    old = PEER_MAC[case.next_hop]
    try:
        t_fill = time.monotonic()                # no slot of this key is older
        assert _dmac(case) == old
        change.apply()
        if time.monotonic() - t_fill < MIN_AGE / 2:
            assert _dmac(case) == old            # cached, and no one bumps the generation
        # every packet sent once the slot has expired takes the new next hop
        # (coarse clock: a tick or two of slack)
        expired = t_fill + MAX_AGE + 0.05
        after = []
        deadline = t_fill + 3 * MAX_AGE
        while time.monotonic() < deadline and len(after) < 5:
            start = time.monotonic()
            got = _dmac(case)
            if start >= expired:
                after.append(got)
            time.sleep(0.01)
        assert after and all(m == NEW_MAC for m in after), after
    finally:
        change.undo()
        dp.next_hops_changed()


def test_generation_bumped_by_config_and_out_devs(dp):
    def gen():
        t = dp.table("nh_gen")
        return t[t.Key(0)].value

    g = gen()
    assert g >= 1                       # 0 would disable the cache
    dp.set_xdp_redirect("rl0", True)
    assert gen() > g
    g = gen()
    dp.set_peer_handoff("rl0", False)
    assert gen() > g
    g = gen()
    dp.add_local_rloc(ip("192.0.2.9"))  # outer source: part of the ITR's key
    assert gen() > g
