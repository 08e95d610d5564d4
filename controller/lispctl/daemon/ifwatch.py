"""Follow the interfaces that carry our locators while the daemon runs.

At start the daemon reads their addresses once (build.py). This keeps them
current: an rtnetlink watcher on the loop; when an interface named by a
locator (or an RLOC-facing interface) gains or loses an address, or its
link goes down or up, the ETR is told (it re-registers at once and sends
SMRs to the ITRs that asked for our mapping) and the data plane's local
RLOC set follows, so packets to a new RLOC are decapsulated.

RLOC interfaces (the data plane's decapsulation side; a mobile node's
uplinks) may appear after start or be re-created (a USB modem, a Wi-Fi
interface): one that appears, or comes back with another ifindex, gets the
ETR program attached before the ETR hears of its addresses; one that
disappears loses its filter with it (the kernel removes it) and its
locators go like any removed address. Attaching uses pyroute2's blocking
IPRoute, which must not run on the loop's thread, so such changes are
handled by one worker task (events stay in order).
"""
from __future__ import annotations

import asyncio
import functools
import logging
from typing import TYPE_CHECKING

from lispctl.datapath.attach import CHECKSUM_MODES
from lispctl.roles import EtrRole, ItrRole, PetrRole, find_role

from .build import _interfaces_to_read

if TYPE_CHECKING:  # imported when started: pyroute2 is not needed before
    from lispctl.net.watch import InterfaceWatcher

log = logging.getLogger("lispctl.daemon")


def _site_role(roles: list) -> EtrRole | ItrRole | PetrRole | None:
    """The role holding the device's LocalSite: its ETR, else its ITR, PITR or PETR."""
    for name in ("etr", "itr", "pitr", "petr"):
        r = find_role(roles, name)
        if isinstance(r, (EtrRole, ItrRole, PetrRole)):
            return r
    return None


class NextHopSync:
    """Drops the data plane's cached next hops (bpf/lisp_nexthop.h) when the
    kernel's forwarding state changed: called after each drain of an
    InterfaceWatcher opened with track_forwarding, it bumps the next-hop
    generation once if any link, address, route, rule or neighbour notification
    (or a re-dump) came since the last call, so the next packet asks the FIB.
    Returns whether it did. After qdisc, filter or link notifications it has
    the data plane check its hand-overs to veth peers
    (Datapath.recheck_handoffs: a shaper or egress filter added since attach
    takes the hand-over back; a device's offloads decide which packets go)."""

    def __init__(self, datapath) -> None:
        self.dp = datapath
        self.seen = 0
        self.seen_tc = 0
        self.seen_links = 0

    def __call__(self, watcher) -> bool:
        if watcher.tc_changes != self.seen_tc or watcher.link_changes != self.seen_links:
            self.seen_tc, self.seen_links = watcher.tc_changes, watcher.link_changes
            self.dp.recheck_handoffs()
        if watcher.forwarding_changes == self.seen:
            return False
        self.seen = watcher.forwarding_changes
        self.dp.next_hops_changed()
        return True


class LocatorWatch:
    def __init__(self, runtime, device, names: list[str]) -> None:
        self.rt = runtime
        self.device = device
        self.names = names
        self.etr = find_role(device.roles, "etr")
        role = _site_role(device.roles)
        assert role is not None                  # for_device() checked
        self.site = role.site
        self.watcher: InterfaceWatcher | None = None
        self.known: dict[str, list] = {}
        self.link_up: dict[str, bool] = {}
        # RLOC interfaces the data plane decapsulates on, and the ifindex each
        # is attached at now (build.py attached the ones that existed).
        self.rloc_names: list[str] = []
        self.attached: dict[str, int] = {}
        if device.datapath is not None:
            from lispctl.roles import datapath_plan
            self.rloc_names = list(datapath_plan(self.site.cfg, device.roles).rloc_interfaces)
            self.attached = dict(device.info.get("rloc_ifindex", {}))
        self._pending: list = []
        self._worker: asyncio.Task | None = None
        self.attach_errors = 0
        dp = device.datapath
        self.next_hops = NextHopSync(dp) if getattr(dp, "next_hops_changed", None) else None

    @classmethod
    def for_device(cls, runtime, device) -> "LocatorWatch | None":
        """None when the device has no locators or RLOC interfaces to follow."""
        role = _site_role(device.roles)
        if role is None or getattr(role, "site", None) is None:
            return None
        names = _interfaces_to_read(role.site.cfg)
        return cls(runtime, device, names) if names else None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        from lispctl.net.watch import InterfaceWatcher
        self.watcher = watcher = InterfaceWatcher(
            track_gateways=False, track_forwarding=self.next_hops is not None).open()
        self.known = {n: list(self.site.iface_addrs.get(n, [])) for n in self.names}
        loop.add_reader(watcher.fileno(), self._ready)
        self._enqueue([])     # anything that changed between build and now

    def close(self) -> None:
        if self._worker is not None and not self._worker.done():
            self._worker.cancel()
        if self.watcher is not None:
            try:
                asyncio.get_running_loop().remove_reader(self.watcher.fileno())
            except (RuntimeError, ValueError):
                pass
            self.watcher.close()
            self.watcher = None

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
        if events:
            self._enqueue(events)

    def next_hops_sync(self) -> None:
        if self.watcher is None or self.next_hops is None:
            return
        try:
            if self.next_hops(self.watcher):
                self.rt.counters["next_hop_invalidations"] += 1
        except Exception:
            self.rt.counters["effect_errors"] += 1
            log.exception("invalidating the data plane's next hops failed")

    def _enqueue(self, events) -> None:
        """Handle at once unless an RLOC interface needs (re)attaching or the
        worker is busy: then in order, on the worker."""
        if (self._worker is None or self._worker.done()) and not self._attach_needed():
            self._sync(events)
            return
        self._pending.extend(events)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._work())

    async def _work(self) -> None:
        while True:
            await self.attach_rloc_interfaces()   # before the ETR announces its addresses
            events, self._pending = self._pending, []
            self._sync(events)
            if not self._pending:
                return              # a failed attach is retried at the next event

    async def stop_worker(self) -> None:
        if self._worker is not None and not self._worker.done():
            self._worker.cancel()
            try:
                await self._worker
            except (asyncio.CancelledError, Exception):
                pass
        self._worker = None

    # -- RLOC interfaces that come and go ----------------------------------------
    def _attach_needed(self) -> bool:
        if self.watcher is None:
            return False
        view = self.watcher.view
        return any(view.index(n) != self.attached.get(n) for n in self.rloc_names)

    async def attach_rloc_interfaces(self) -> None:
        """Attach the data plane's ETR program to RLOC interfaces that appeared
        (or were re-created); forget the ones that went (their filter went too)."""
        dp = self.device.datapath
        if dp is None or self.watcher is None:
            return
        loop = asyncio.get_running_loop()
        for name in self.rloc_names:
            index = self.watcher.view.index(name)
            if index == self.attached.get(name):
                continue
            if index is None:
                del self.attached[name]
                for decided in ("xdp_redirect", "peer_handoff"):     # decided anew if it comes back
                    self.device.info.get(decided, {}).pop(name, None)
                log.info("RLOC interface %s is gone", name)
                continue
            try:
                await loop.run_in_executor(None, functools.partial(
                    dp.attach_rloc_interface, name, mode=self.device.info.get("rloc_mode", "auto"),
                    complete_checksums=CHECKSUM_MODES[self.device.info.get("rloc_checksum", "auto")]))
            except Exception:
                # gone again already, or the kernel refused: the next event retries
                self.attach_errors += 1
                self.rt.counters["attach_errors"] += 1
                log.exception("attaching the data plane to %s failed", name)
                continue
            self.attached[name] = index
            self.rt.counters["rloc_interfaces_attached"] += 1
            log.info("RLOC interface %s appeared (ifindex %d): data plane attached", name, index)

    def _sync(self, events) -> None:
        from lispctl.net.watch import LinkDown, LinkUp
        now = self.rt.now()
        if self.watcher is None:                 # stopped meanwhile
            return
        view = self.watcher.view
        changed = False
        for ev in events:
            if isinstance(ev, (LinkUp, LinkDown)) and ev.ifname in self.names:
                up = isinstance(ev, LinkUp)
                if self.link_up.get(ev.ifname, True) != up:
                    self.link_up[ev.ifname] = up
                    changed = True
                    log.info("interface %s %s", ev.ifname, "up" if up else "down")
                    self._tell("set_link_state", ev.ifname, up, now)
        for name in self.names:
            addrs = [a.address for a in view.addresses(name)]
            if set(addrs) != set(self.known.get(name, [])):
                self.known[name] = addrs
                changed = True
                log.info("interface %s addresses now %s", name, ", ".join(map(str, addrs)) or "none")
                self._tell("set_interface_addresses", name, addrs, now)
        if changed:
            self._sync_datapath()
            self.rt._reschedule()

    def _tell(self, method: str, *args) -> None:
        """The ETR when there is one (it re-registers and SMRs); else the
        shared LocalSite directly (the ITR's source RLOCs)."""
        self.rt.counters["interface_changes"] += 1
        if self.etr is not None:
            self.rt._guarded("etr", method, lambda: getattr(self.etr, method)(*args))
        else:
            getattr(self.site, method)(*args[:-1])

    def _sync_datapath(self) -> None:
        dp = self.device.datapath
        if dp is None:
            return
        want, have = set(self.site.rlocs()), set(dp.local_rlocs())
        try:
            for addr in want - have:
                dp.add_local_rloc(addr)
            for addr in have - want:
                dp.remove_local_rloc(addr)
            # the locator-status bits the ITR sends follow our links (RFC 9300 5.3)
            add_eid = getattr(dp, "add_local_eid", None)
            if add_eid is not None:
                for eid, lsb in self.site.locator_status_bits().items():
                    add_eid(eid, lsb)
        except Exception:
            self.rt.counters["effect_errors"] += 1
            log.exception("updating the data plane's local RLOCs failed")
