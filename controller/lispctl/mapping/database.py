"""The local mapping database: EID prefixes this device is an ETR for."""
from __future__ import annotations

from dataclasses import dataclass

from lispctl.mapping.lpm import LpmTable, eid_sort_key
from lispctl.mapping.types import EidPrefix, IPAddress, Rloc


@dataclass(frozen=True, slots=True)
class LocalMapping:
    eid: EidPrefix
    rlocs: tuple[Rloc, ...]


class LocalDatabase:
    def __init__(self, mappings: list[LocalMapping] | None = None) -> None:
        self._table: LpmTable[LocalMapping] = LpmTable()
        for m in mappings or []:
            self.set(m)

    def set(self, mapping: LocalMapping) -> bool:
        """Add or replace; True when the mapping changed."""
        old = self._table.get(mapping.eid)
        self._table.insert(mapping.eid, mapping)
        return old != mapping

    def remove(self, eid: EidPrefix) -> bool:
        return self._table.remove(eid) is not None

    def get(self, eid: EidPrefix) -> LocalMapping | None:
        return self._table.get(eid)

    def lookup(self, iid: int, addr: IPAddress) -> LocalMapping | None:
        hit = self._table.lookup(iid, addr)
        return None if hit is None else hit[1]

    def match(self, eid: EidPrefix) -> LocalMapping | None:
        """The entry that holds eid (equal or less specific)."""
        hit = self._table.longest_covering(eid)
        return None if hit is None else hit[1]

    def __iter__(self):
        return iter(sorted(self._table.values(), key=lambda m: eid_sort_key(m.eid)))

    def __len__(self) -> int:
        return len(self._table)

    def rlocs(self) -> list[IPAddress]:
        """Every distinct locator address, in configuration order."""
        seen: dict[IPAddress, None] = {}
        for m in self:
            for r in m.rlocs:
                seen.setdefault(r.address, None)
        return list(seen)

    def snapshot(self) -> list[dict]:
        return [{"eid": str(m.eid), "rlocs": [rloc_dict(r) for r in m.rlocs]} for m in self]


def rloc_dict(r: Rloc) -> dict:
    return {"address": str(r.address), "priority": r.priority, "weight": r.weight,
            "reachable": r.reachable}
