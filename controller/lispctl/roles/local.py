"""This device's own mappings, built from [[database]] and the addresses
the daemon finds on interfaces (locators may be given by interface name).

Locators on an interface whose link is down stay in the mapping with
reachable=False (R bit clear): peers learn that the locator exists but must
not be used, and it comes back without a new address event when the link does.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable, Mapping

from lispctl.config import Config
from lispctl.mapping.database import LocalDatabase, LocalMapping
from lispctl.mapping.types import EidPrefix, IPAddress, Rloc


@dataclass(frozen=True, slots=True)
class UplinkSpec:
    """A locator given by interface: the daemon turns it into
    lispctl.net.watch.LocatorSpec(ifname, family, priority, weight), one per
    family when family is None."""
    ifname: str
    family: int | None          # 4, 6, or None for both
    priority: int
    weight: int


def uplink_specs(cfg: Config) -> list[UplinkSpec]:
    """Every [[database.locator]] given by interface, in configuration order, de-duplicated."""
    out: dict[UplinkSpec, None] = {}
    for entry in cfg.database:
        for loc in entry.locator:
            if loc.interface is not None:
                fam = {"ipv4": 4, "ipv6": 6}.get(loc.family or "")
                out.setdefault(UplinkSpec(loc.interface, fam, loc.priority, loc.weight), None)
    return list(out)


class LocalSite:
    def __init__(self, cfg: Config, interface_addresses: Mapping[str, Iterable[IPAddress]] | None = None):
        self.cfg = cfg
        self.iface_addrs: dict[str, list[IPAddress]] = {
            k: list(v) for k, v in (interface_addresses or {}).items()}
        self.link_up: dict[str, bool] = {}       # absent: up (the daemon reports changes)
        # priority of all our locators for an EID, set by a Change-Priority
        # Message (roles/cpm.py); overrides the configured ones until restart
        self.priority: dict[EidPrefix, int] = {}
        self.db = LocalDatabase()
        self._rebuild()

    def _mappings(self) -> list[LocalMapping]:
        out = []
        for entry in self.cfg.database:
            rlocs: list[Rloc] = []
            for loc in entry.locator:
                if loc.address is not None:
                    rlocs.append(loc.rloc())
                elif loc.interface is not None:     # the config requires one of the two
                    up = self.link_up.get(loc.interface, True)
                    rlocs.extend(Rloc(a, loc.priority, loc.weight, up)
                                 for a in self.iface_addrs.get(loc.interface, []) if loc.matches_family(a))
            # one locator per address: the first configuration wins
            seen: dict[IPAddress, Rloc] = {}
            prio = self.priority.get(entry.eid)
            for r in rlocs:
                seen.setdefault(r.address, r if prio is None else replace(r, priority=prio))
            out.append(LocalMapping(entry.eid, tuple(seen.values())))
        return out

    def _rebuild(self) -> list[EidPrefix]:
        changed = []
        for m in self._mappings():
            if self.db.set(m):
                changed.append(m.eid)
        return changed

    def set_config(self, cfg: Config) -> list[EidPrefix]:
        """A new configuration (lispctl reload): the EID prefixes added,
        removed, or whose locators changed."""
        self.cfg = cfg
        keep = {entry.eid for entry in cfg.database}
        removed = [m.eid for m in self.db if m.eid not in keep]
        for eid in removed:
            self.db.remove(eid)
        return removed + self._rebuild()

    def set_interface_addresses(self, ifname: str, addrs: Iterable[IPAddress]) -> list[EidPrefix]:
        """New address list of an interface; returns the EID prefixes whose
        locator set changed (empty when nothing did)."""
        self.iface_addrs[ifname] = list(addrs)
        return self._rebuild()

    def set_link_state(self, ifname: str, up: bool) -> list[EidPrefix]:
        """An interface went up or down (addresses unchanged); returns the
        EID prefixes whose locators changed reachability."""
        self.link_up[ifname] = bool(up)
        return self._rebuild()

    def set_priority(self, eid: EidPrefix, priority: int) -> list[EidPrefix]:
        """Give every locator of database entry `eid` this priority; returns
        the EID prefixes whose locators changed (empty when nothing did)."""
        self.priority[eid] = priority
        return self._rebuild()

    def rlocs(self) -> list[IPAddress]:
        """Our RLOC addresses: database locators, else addresses of the
        RLOC-facing interfaces (an ITR without a database still needs some)."""
        out = self.db.rlocs()
        if not out:
            for name in self.cfg.interfaces.rloc_facing:
                out.extend(self.iface_addrs.get(name, []))
        return list(dict.fromkeys(out))

    def usable_rlocs(self) -> list[IPAddress]:
        """RLOCs to send from and to announce as ITR-RLOCs: those whose link
        is up, else (nothing up) all of them."""
        down = {r.address for m in self.db for r in m.rlocs if not r.reachable}
        down -= {r.address for m in self.db for r in m.rlocs if r.reachable}
        for name in self.cfg.interfaces.rloc_facing:
            if not self.link_up.get(name, True):
                down.update(self.iface_addrs.get(name, []))
        every = self.rlocs()
        up = [a for a in every if a not in down]
        return up or every

    def preferred_rlocs(self) -> list[IPAddress]:
        """usable_rlocs() by their best configured priority (stable: ties
        keep configuration order). The first of a family is the one a mobile
        node sends its data from (daemon/mobile.py) and, behind a NAT, the
        one whose RTR carries that data (roles/nat.py)."""
        best: dict[IPAddress, int] = {}
        for m in self.db:
            for r in m.rlocs:
                if r.reachable:
                    best[r.address] = min(r.priority, best.get(r.address, 255))
        return sorted(self.usable_rlocs(), key=lambda a: best.get(a, 255))

    def local_locators(self) -> list[Rloc]:
        """Distinct local locators with their reachability (for the data
        plane's locator-status bits)."""
        seen: dict[IPAddress, Rloc] = {}
        for m in self.db:
            for r in m.rlocs:
                if r.address not in seen or (r.reachable and not seen[r.address].reachable):
                    seen[r.address] = r
        return list(seen.values())

    def locator_status_bits(self) -> dict[EidPrefix, int]:
        """Per local EID prefix, the locator-status bits an ITR sends for
        packets from it (RFC 9300 5.3): bit i = locator i of that prefix's
        own mapping, in its order, is up (reachable, its link not down)."""
        down: set[IPAddress] = set()
        for name in self.cfg.interfaces.rloc_facing:
            if not self.link_up.get(name, True):
                down.update(self.iface_addrs.get(name, []))
        return {m.eid: sum(1 << i for i, r in enumerate(m.rlocs[:32]) if r.reachable and r.address not in down)
                for m in self.db}

    def source_for(self, dst: IPAddress) -> IPAddress | None:
        """A usable local RLOC of dst's family (control traffic of a mobile
        node must leave from an RLOC, never from the EID device)."""
        return next((a for a in self.usable_rlocs() if a.version == dst.version), None)

    def eids(self) -> list[EidPrefix]:
        return [m.eid for m in self.db]
