"""Follow the interfaces that carry our locators while the daemon runs.

At start the daemon reads their addresses once (build.py). This keeps them
current: an rtnetlink watcher on the loop; when an interface named by a
locator (or an RLOC-facing interface) gains or loses an address, or its
link goes down or up, the ETR is told (it re-registers at once and sends
SMRs to the ITRs that asked for our mapping) and the data plane's local
RLOC set follows, so packets to a new RLOC are decapsulated.
"""
from __future__ import annotations

import asyncio
import logging

from lispctl.roles import find_role

from .build import _interfaces_to_read

log = logging.getLogger("lispctl.daemon")


class LocatorWatch:
    def __init__(self, runtime, device, names: list[str]) -> None:
        self.rt = runtime
        self.device = device
        self.names = names
        self.etr = find_role(device.roles, "etr")
        role = self.etr or find_role(device.roles, "itr")
        self.site = role.site
        self.watcher = None
        self.known: dict[str, list] = {}
        self.link_up: dict[str, bool] = {}

    @classmethod
    def for_device(cls, runtime, device) -> "LocatorWatch | None":
        """None when the device has no locators or RLOC interfaces to follow."""
        role = find_role(device.roles, "etr") or find_role(device.roles, "itr")
        if role is None or getattr(role, "site", None) is None:
            return None
        names = _interfaces_to_read(role.site.cfg)
        return cls(runtime, device, names) if names else None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        from lispctl.net.watch import InterfaceWatcher
        self.watcher = InterfaceWatcher(track_gateways=False).open()
        self.known = {n: list(self.site.iface_addrs.get(n, [])) for n in self.names}
        loop.add_reader(self.watcher.fileno(), self._ready)
        self._sync([])        # anything that changed between build and now

    def close(self) -> None:
        if self.watcher is not None:
            try:
                asyncio.get_running_loop().remove_reader(self.watcher.fileno())
            except (RuntimeError, ValueError):
                pass
            self.watcher.close()
            self.watcher = None

    def _ready(self) -> None:
        try:
            events = self.watcher.drain()
        except Exception:
            self.rt.counters["netwatch_errors"] += 1
            log.exception("reading interface changes failed")
            return
        self._sync(events)

    def _sync(self, events) -> None:
        from lispctl.net.watch import LinkDown, LinkUp
        now = self.rt.now()
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
        except Exception:
            self.rt.counters["effect_errors"] += 1
            log.exception("updating the data plane's local RLOCs failed")
