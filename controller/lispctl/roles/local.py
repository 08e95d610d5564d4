"""This device's own mappings, built from [[database]] and the addresses
the daemon finds on interfaces (locators may be given by interface name)."""
from __future__ import annotations

from typing import Iterable, Mapping

from lispctl.config import Config
from lispctl.mapping.database import LocalDatabase, LocalMapping
from lispctl.mapping.types import EidPrefix, IPAddress, Rloc


class LocalSite:
    def __init__(self, cfg: Config, interface_addresses: Mapping[str, Iterable[IPAddress]] | None = None):
        self.cfg = cfg
        self.iface_addrs: dict[str, list[IPAddress]] = {
            k: list(v) for k, v in (interface_addresses or {}).items()}
        self.db = LocalDatabase()
        self._rebuild()

    def _mappings(self) -> list[LocalMapping]:
        out = []
        for entry in self.cfg.database:
            rlocs: list[Rloc] = []
            for loc in entry.locator:
                if loc.address is not None:
                    rlocs.append(loc.rloc())
                else:
                    rlocs.extend(loc.rloc(a) for a in self.iface_addrs.get(loc.interface, [])
                                 if loc.matches_family(a))
            out.append(LocalMapping(entry.eid, tuple(dict.fromkeys(rlocs))))
        return out

    def _rebuild(self) -> list[EidPrefix]:
        changed = []
        for m in self._mappings():
            if self.db.set(m):
                changed.append(m.eid)
        return changed

    def set_interface_addresses(self, ifname: str, addrs: Iterable[IPAddress]) -> list[EidPrefix]:
        """New address list of an interface; returns the EID prefixes whose
        locator set changed (empty when nothing did)."""
        self.iface_addrs[ifname] = list(addrs)
        return self._rebuild()

    def rlocs(self) -> list[IPAddress]:
        """Our RLOC addresses: database locators, else addresses of the
        RLOC-facing interfaces (an ITR without a database still needs some)."""
        out = self.db.rlocs()
        if not out:
            for name in self.cfg.interfaces.rloc_facing:
                out.extend(self.iface_addrs.get(name, []))
        return list(dict.fromkeys(out))

    def eids(self) -> list[EidPrefix]:
        return [m.eid for m in self.db]
