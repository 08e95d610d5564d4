"""Mapping ids (locator set + per-mapping counters) handed out in O(1).

Ids run from 1 to limit - 1 (0 is the Proxy-ETRs' locator set). Ids never
used go first, then released ones, oldest release first: an id is reused as
late as possible, so a packet that looked up an entry just before it was
deleted does not find the locator set of an unrelated new mapping under
the same id. Both are compact arrays: a million ids cost a few MB, not a
set of Python ints.
"""
from __future__ import annotations

from array import array
from typing import Iterable

_COMPACT = 4096


class IdPool:
    def __init__(self, limit: int, used: Iterable[int] = (), reserved: int = 0) -> None:
        self.limit = limit                   # ids are < limit
        used_set = {i for i in used if 0 <= i < limit} - {reserved}
        top = max(used_set | {reserved}) + 1
        self._next = top                     # ids >= _next were never handed out
        self._free = array("I", (i for i in range(top) if i not in used_set and i != reserved))
        self._head = 0                       # _free[_head:] are available, oldest first
        self.in_use = len(used_set)

    def __len__(self) -> int:
        """Ids still available."""
        return len(self._free) - self._head + self.limit - self._next

    def take(self) -> int | None:
        if self._next < self.limit:
            self._next += 1
            self.in_use += 1
            return self._next - 1
        if self._head < len(self._free):
            mid = self._free[self._head]
            self._head += 1
            self._compact()
            self.in_use += 1
            return mid
        return None

    def take_many(self, n: int) -> array | None:
        """n ids (None, and nothing taken, when fewer are left)."""
        if n > len(self):
            return None
        fresh = min(n, self.limit - self._next)
        out = array("I", range(self._next, self._next + fresh))
        self._next += fresh
        rest = n - fresh
        if rest:
            out.extend(self._free[self._head:self._head + rest])
            self._head += rest
            self._compact()
        self.in_use += n
        return out

    def release(self, mid: int) -> None:
        self._free.append(mid)
        self.in_use -= 1

    def release_many(self, ids: array) -> None:
        self._free.extend(ids)
        self.in_use -= len(ids)

    def _compact(self) -> None:
        if self._head > _COMPACT and 2 * self._head > len(self._free):
            del self._free[:self._head]
            self._head = 0
