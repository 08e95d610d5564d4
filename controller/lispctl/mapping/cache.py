"""The map-cache as the control plane sees it.

Time is always passed in. Each entry remembers when it was installed, when
it expires, and when the data plane last reported it used, so the ITR can
refresh busy entries before they expire and let idle ones lapse.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from lispctl.mapping.database import rloc_dict
from lispctl.mapping.lpm import LpmTable, eid_sort_key
from lispctl.mapping.types import EidPrefix, IPAddress, MapAction, Rloc


@dataclass(slots=True)
class CacheEntry:
    eid: EidPrefix
    rlocs: tuple[Rloc, ...]
    action: MapAction
    installed_at: float
    expires_at: float | None          # None: static, never expires
    last_used: float | None = None
    refreshing: bool = False          # a refresh Map-Request is outstanding
    source: str = "map-reply"         # map-reply | static | unreachable

    @property
    def negative(self) -> bool:
        return not self.rlocs

    @property
    def static(self) -> bool:
        return self.expires_at is None

    def ttl_left(self, now: float) -> float | None:
        return None if self.expires_at is None else max(0.0, self.expires_at - now)

    def to_dict(self, now: float) -> dict:
        left = self.ttl_left(now)
        return {
            "eid": str(self.eid),
            "rlocs": [rloc_dict(r) for r in self.rlocs],
            "action": self.action.name.lower().replace("_", "-"),
            "negative": self.negative,
            "static": self.static,
            "ttl_left_s": None if left is None else round(left, 3),
            "age_s": round(now - self.installed_at, 3),
            "last_used_s_ago": None if self.last_used is None else round(now - self.last_used, 3),
            "source": self.source,
        }


@dataclass(order=True, slots=True)
class _Timer:
    at: float
    eid: EidPrefix = field(compare=False)


class MapCache:
    def __init__(self) -> None:
        self._table: LpmTable[CacheEntry] = LpmTable()
        self._heap: list[_Timer] = []
        self._by_version = {4: 0, 6: 0}

    def __len__(self) -> int:
        return len(self._table)

    def count(self, version: int) -> int:
        """Entries of one address family."""
        return self._by_version[version]

    def install(self, eid: EidPrefix, rlocs: tuple[Rloc, ...], action: MapAction,
                ttl_s: float | None, now: float, source: str = "map-reply") -> CacheEntry:
        """Add or replace; ttl_s None makes a static entry. A replacement
        keeps the usage record so a refreshed entry stays 'in use'."""
        old = self._table.get(eid)
        expires = None if ttl_s is None else now + ttl_s
        entry = CacheEntry(eid, tuple(rlocs), action, now, expires,
                           last_used=old.last_used if old else None, source=source)
        self._table.insert(eid, entry)
        if old is None:
            self._by_version[eid.prefix.version] += 1
        if expires is not None:
            heapq.heappush(self._heap, _Timer(expires, eid))
        return entry

    def remove(self, eid: EidPrefix) -> CacheEntry | None:
        old = self._table.remove(eid)
        if old is not None:
            self._by_version[eid.prefix.version] -= 1
        return old

    def get(self, eid: EidPrefix) -> CacheEntry | None:
        return self._table.get(eid)

    def lookup(self, iid: int, addr: IPAddress) -> CacheEntry | None:
        hit = self._table.lookup(iid, addr)
        return None if hit is None else hit[1]

    def covering(self, eid: EidPrefix) -> CacheEntry | None:
        hit = self._table.longest_covering(eid)
        return None if hit is None else hit[1]

    def mark_used(self, eid: EidPrefix, now: float) -> bool:
        """The data plane reports traffic hit eid (exact prefix, or any
        address inside it). False when nothing in the cache matches."""
        entry = self._table.get(eid) or self.covering(eid)
        if entry is None:
            return False
        entry.last_used = now
        return True

    def expire(self, now: float) -> list[CacheEntry]:
        """Remove and return entries whose TTL ran out by `now`."""
        gone = []
        while self._heap and self._heap[0].at <= now:
            t = heapq.heappop(self._heap)
            entry = self._table.get(t.eid)
            # stale timers (entry replaced or removed) are skipped
            if entry is not None and entry.expires_at is not None and entry.expires_at <= now:
                self._table.remove(t.eid)
                self._by_version[t.eid.prefix.version] -= 1
                gone.append(entry)
        return gone

    def next_expiry(self) -> float | None:
        while self._heap:
            t = self._heap[0]
            entry = self._table.get(t.eid)
            if entry is not None and entry.expires_at == t.at:
                return t.at
            heapq.heappop(self._heap)
        return None

    def entries(self) -> list[CacheEntry]:
        return sorted(self._table.values(), key=lambda e: eid_sort_key(e.eid))

    def snapshot(self, now: float) -> list[dict]:
        return [e.to_dict(now) for e in self.entries()]
