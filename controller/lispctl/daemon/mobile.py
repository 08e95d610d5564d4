"""The daemon side of a LISP mobile node (roles = ["mobile-node"]).

A mobile node is a host that is its own xTR. At start it creates the EID
device and its source routing (lispctl.net.mobile.MobileNode), attaches the
data plane to the EID device's egress, and gives every uplink that has an
address its own routing table. Then it follows the uplinks with the same
rtnetlink watcher as any xTR (daemon/ifwatch.py, no polling), and on every
change, in this order:

1. at once, in the netlink callback: RLOCs that are no longer usable (link
   down, address gone) leave the data plane's local RLOC set. The first
   local RLOC of a family is the outer source of encapsulated packets, so a
   dead one must not stay first even for a loop iteration;
2. the uplink rules/tables follow (MobileNode.add_uplink/remove_uplink;
   a gateway that appears later re-syncs the uplink). Before that, an
   uplink that did not exist at start (or was re-created) gets the data
   plane's ETR program attached (LocatorWatch.attach_rloc_interfaces);
3. only then the ETR is told (set_link_state / set_interface_addresses):
   it re-registers and sends SMRs at once, from a usable RLOC whose rule
   now exists (a Map-Register from a new RLOC sent before its rule would be
   routed into the EID device and lost), and new RLOCs join the data plane.

Every control message of a mobile node carries src = one of its RLOCs
(the roles set it; the runtime sends with IP_PKTINFO/IPV6_PKTINFO), so it
leaves through that RLOC's uplink instead of the EID device.

The data plane is also told which locator families it can use: a remote
locator of a family we have no RLOC of (an IPv6-only node and an IPv4
locator) is installed as unreachable, so flows use the remote's other
locators instead of being dropped for want of a source address.

On exit everything is undone: watcher closed, uplink rules, tables, EID
device (its tc filter goes with it) removed by MobileNode.restore().
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from lispctl.roles import datapath_plan, find_role
from lispctl.roles.nat import NatRole

from .build import _interfaces_to_read
from .ifwatch import LocatorWatch

if TYPE_CHECKING:  # imported when started (pyroute2)
    from lispctl.net.mobile import MobileNode

log = logging.getLogger("lispctl.daemon")


def locator_specs(uplinks) -> list:
    """UplinkSpec (family None = both) -> net.watch.LocatorSpec, one per family."""
    from lispctl.net.watch import LocatorSpec
    out = []
    for u in uplinks:
        for fam in ((u.family,) if u.family else (4, 6)):
            out.append(LocatorSpec(u.ifname, fam, u.priority, u.weight))
    return out


class FamilyMaskedDatapath:
    """The device's Datapath as the Runtime sees it: mappings are installed
    with remote locators of a family we have no local RLOC of marked
    unreachable (as long as another locator stays usable). Everything else
    is passed through."""

    def __init__(self, dp: Any) -> None:
        self._dp = dp
        self.families: set[int] = {a.version for a in dp.local_rlocs()}
        self._installed: dict = {}          # eid -> (rlocs as asked, action)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._dp, name)

    def _masked(self, rlocs):
        if not rlocs:
            return list(rlocs)
        masked = [r if r.address.version in self.families else replace(r, reachable=False) for r in rlocs]
        if not any(r.reachable and r.priority != 255 for r in masked):
            return list(rlocs)              # nothing better to offer: leave it as it was
        return masked

    def set_mapping(self, eid, rlocs, action=None, *args, **kw):
        rlocs = list(rlocs)
        self._installed[eid] = (rlocs, action)
        if action is None:
            return self._dp.set_mapping(eid, self._masked(rlocs), *args, **kw)
        return self._dp.set_mapping(eid, self._masked(rlocs), action, *args, **kw)

    def delete_mapping(self, eid, *args, **kw):
        self._installed.pop(eid, None)
        return self._dp.delete_mapping(eid, *args, **kw)

    def families_changed(self, fams: set[int] | None = None) -> int:
        """Re-install every mapping after our local families changed (or, with
        `fams`, before they change to that: a family about to lose its last
        RLOC is masked first, so no packet meets a locator it has no source
        for); returns how many."""
        if fams is None:
            fams = {a.version for a in self._dp.local_rlocs()}
        if fams == self.families:
            return 0
        self.families = fams
        n = 0
        for eid, (rlocs, action) in list(self._installed.items()):
            if any(r.address.version not in fams for r in rlocs) or rlocs != self._masked(rlocs):
                self._dp.set_mapping(eid, self._masked(rlocs), action)
                n += 1
        return n


class MobileNodeWatch(LocatorWatch):
    """LocatorWatch plus the EID device, the uplinks and their ordering."""

    def __init__(self, runtime, device, names: list[str], plan) -> None:
        super().__init__(runtime, device, names)
        self.plan = plan                              # roles.MobileNodePlan
        self.specs = locator_specs(plan.uplinks)
        self.mn: MobileNode | None = None
        self.masked: FamilyMaskedDatapath | None = None
        self._gateways: dict[tuple[str, int], Any] = {}
        self.uplink_errors = 0

    @classmethod
    def for_device(cls, runtime, device) -> "MobileNodeWatch | None":
        """None unless the device is a mobile node."""
        role = find_role(device.roles, "etr") or find_role(device.roles, "itr")
        site = getattr(role, "site", None)
        if site is None or not getattr(site.cfg, "is_mobile_node", False):
            return None
        plan = datapath_plan(site.cfg, device.roles).mobile_node
        return cls(runtime, device, _interfaces_to_read(site.cfg), plan)

    # -- lifecycle ------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop) -> None:  # pragma: no cover - API guard
        raise RuntimeError("a mobile node is started with `await setup(loop)`")

    async def setup(self, loop: asyncio.AbstractEventLoop) -> None:
        from lispctl.net.mobile import MobileNode
        from lispctl.net.watch import InterfaceWatcher
        p = self.plan
        self.mn = mn = MobileNode(p.eids, ifname=p.eid_device, mtu=p.mtu, eid_table=p.eid_table,
                                  uplink_table_base=p.uplink_table_base)
        await mn.setup()
        try:
            dp = self.device.datapath
            if dp is not None:
                # pyroute2's sync IPRoute (tc attach) cannot run inside a running loop
                await loop.run_in_executor(None, dp.attach_eid_device, p.eid_device)
                self.masked = FamilyMaskedDatapath(dp)
                self.rt.datapath = self.masked
            self.device.info["mobile_node"] = {
                "eid_device": p.eid_device, "eids": [str(e) for e in p.eids],
                "uplinks": [f"{s.ifname}/ipv{s.family}" for s in self.specs]}
            # gateways too: an uplink's table must follow its default route
            self.watcher = watcher = InterfaceWatcher(track_gateways=True,
                                                      track_forwarding=self.next_hops is not None).open()
            self.known = {n: list(self.site.iface_addrs.get(n, [])) for n in self.names}
            view = watcher.view
            now = self.rt.now()
            for name in self.names:
                if view.by_name(name) is not None and not view.is_up(name):
                    self.link_up[name] = False
                    self._tell("set_link_state", name, False, now)
            self._drop_unusable()
            await self.attach_rloc_interfaces()   # uplinks that appeared since build
            await self._sync_uplinks()
            self._sync([])
            nat = find_role(self.device.roles, "nat")
            if isinstance(nat, NatRole):
                # NAT checks sent before the uplinks' source routing existed
                # may have left through another uplink: ask again (roles/nat.py)
                self.rt._guarded("nat", "reprobe", lambda: nat.reprobe(self.rt.now()))
                self.rt._reschedule()
            loop.add_reader(watcher.fileno(), self._ready)
            log.info("mobile node: EID device %s (%s), uplinks %s", p.eid_device,
                     ", ".join(map(str, p.eids)),
                     ", ".join(f"{u.ifname}/ipv{u.rloc.version}={u.rloc}" for u in mn.uplinks.values())
                     or "none yet")
        except BaseException:
            await self.restore()
            raise

    async def restore(self) -> None:
        """Close the watcher and undo the EID device and uplinks; idempotent."""
        await self.stop_worker()
        self.close()
        if self.masked is not None:
            self.rt.datapath = self.masked._dp
            self.masked = None
        if self.mn is not None:
            mn, self.mn = self.mn, None
            await mn.restore()

    # -- events -----------------------------------------------------------------
    def _ready(self) -> None:
        if self.watcher is None:                 # stopped: the reader is gone too
            return
        try:
            events = self.watcher.drain()
        except Exception:
            self.rt.counters["netwatch_errors"] += 1
            log.exception("reading interface changes failed")
            return
        self.next_hops_sync()
        if not events:
            return
        self._drop_unusable()
        self._pending.extend(events)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._work())

    async def _work(self) -> None:
        while self._pending:
            events, self._pending = self._pending, []
            # a new or re-created uplink decapsulates before anything announces it
            await self.attach_rloc_interfaces()
            try:
                await self._sync_uplinks()
            except Exception:
                self.uplink_errors += 1
                self.rt.counters["uplink_errors"] += 1
                log.exception("updating the uplinks' source routing failed")
            self._sync(events)

    def _usable_now(self) -> set:
        """RLOCs the view says can carry traffic now (address present, link up)."""
        from lispctl.net.watch import local_locators
        assert self.watcher is not None          # only while started
        return {r.address for r in local_locators(self.watcher.view, self.specs) if r.reachable}

    def _drop_unusable(self) -> None:
        dp = self.device.datapath
        if dp is None:
            return
        usable = self._usable_now()
        gone = [a for a in dp.local_rlocs() if a not in usable]
        # Keep a dead RLOC only if it is the last of all: nothing to send from anyway.
        if gone and len(gone) < len(dp.local_rlocs()):
            try:
                if self.masked is not None:
                    self.masked.families_changed({a.version for a in dp.local_rlocs() if a not in gone})
                for addr in gone:
                    dp.remove_local_rloc(addr)
                    log.info("RLOC %s no longer usable: removed from the data plane", addr)
            except Exception:
                self.rt.counters["effect_errors"] += 1
                log.exception("removing unusable RLOCs from the data plane failed")

    async def _sync_uplinks(self) -> None:
        """Make MobileNode's uplinks match the view: one per (interface, family)
        whose link is up and which has an address; re-sync on a new RLOC or gateway."""
        from lispctl.net.watch import preferred_address
        mn = self.mn
        assert self.watcher is not None and mn is not None       # only while started
        view = self.watcher.view
        want: dict[tuple[str, int], Any] = {}
        for spec in self.specs:
            a = preferred_address(view, spec.ifname, spec.family)
            if a is not None and view.is_up(spec.ifname):
                want.setdefault((spec.ifname, spec.family), a.address)
        for key in [k for k in mn.uplinks if k not in want]:
            await mn.remove_uplink(*key)
            self._gateways.pop(key, None)
            log.info("uplink %s/ipv%d removed", *key)
        for key, rloc in want.items():
            gw = view.gateway(key[0], key[1])
            have = mn.uplinks.get(key)
            if (have is not None and have.rloc == rloc and self._gateways.get(key) == gw
                    and have.ifindex == view.index(key[0])):     # not re-created meanwhile
                continue
            await mn.add_uplink(key[0], rloc)
            self._gateways[key] = gw
            log.info("uplink %s/ipv%d: RLOC %s, gateway %s", key[0], key[1], rloc, gw or "none")

    def _sync_datapath(self) -> None:
        """Local RLOCs = the usable ones: vanished ones out first, then new ones in."""
        dp = self.device.datapath
        if dp is None:
            return
        usable = self.site.usable_rlocs()
        want, have = set(usable), dp.local_rlocs()
        try:
            if self.masked is not None:      # mask families about to go first
                self.masked.families_changed({a.version for a in have if a in want})
            for addr in have:
                if addr not in want:
                    dp.remove_local_rloc(addr)
            for addr in usable:
                if addr not in have:
                    dp.add_local_rloc(addr)
            # data leaves from the preferred uplink (best priority), also
            # when it returns after another took over: behind a NAT that is
            # the binding the RTR answers through (docs/nat.md)
            prefer = getattr(dp, "prefer_local_rloc", None)
            if prefer is not None:
                for fam in (4, 6):
                    first = next((a for a in self.site.preferred_rlocs() if a.version == fam), None)
                    if first is not None:
                        prefer(first)
            if self.masked is not None:
                self.masked.families_changed()
        except Exception:
            self.rt.counters["effect_errors"] += 1
            log.exception("updating the data plane's local RLOCs failed")
