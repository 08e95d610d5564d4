"""Longest-prefix match over EID prefixes, per instance ID and family.

One dict per (iid, family, mask length) holding network integers: a lookup
tries at most 33 or 129 dict probes and usually far fewer, because only the
mask lengths in use are tried. Plenty for a control plane; the data plane has
its own LPM trie in BPF.
"""
from __future__ import annotations

import ipaddress
from typing import Generic, Iterator, TypeVar

from lispctl.mapping.types import EidPrefix, IPAddress

V = TypeVar("V")


def _bits(version: int) -> int:
    return 32 if version == 4 else 128


class _Space(Generic[V]):
    """All prefixes of one instance ID and address family."""
    __slots__ = ("by_len", "lengths")

    def __init__(self) -> None:
        self.by_len: dict[int, dict[int, tuple[EidPrefix, V]]] = {}
        self.lengths: list[int] = []        # in use, longest first

    def reindex(self) -> None:
        self.lengths = sorted((n for n, d in self.by_len.items() if d), reverse=True)


class LpmTable(Generic[V]):
    def __init__(self) -> None:
        self._spaces: dict[tuple[int, int], _Space[V]] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __contains__(self, eid: EidPrefix) -> bool:
        return self.get(eid) is not None

    def _space(self, iid: int, version: int, create: bool = False) -> _Space[V] | None:
        key = (iid, version)
        space = self._spaces.get(key)
        if space is None and create:
            space = self._spaces[key] = _Space()
        return space

    def insert(self, eid: EidPrefix, value: V) -> None:
        space = self._space(eid.iid, eid.prefix.version, create=True)
        assert space is not None                # create=True always gives one
        n = eid.prefix.prefixlen
        bucket = space.by_len.setdefault(n, {})
        key = int(eid.prefix.network_address)
        if key not in bucket:
            self._count += 1
        bucket[key] = (eid, value)
        if n not in space.lengths:
            space.reindex()

    def remove(self, eid: EidPrefix) -> V | None:
        space = self._space(eid.iid, eid.prefix.version)
        if space is None:
            return None
        bucket = space.by_len.get(eid.prefix.prefixlen)
        if not bucket:
            return None
        hit = bucket.pop(int(eid.prefix.network_address), None)
        if hit is None:
            return None
        self._count -= 1
        if not bucket:
            space.reindex()
        return hit[1]

    def get(self, eid: EidPrefix) -> V | None:
        """Exact match."""
        space = self._space(eid.iid, eid.prefix.version)
        if space is None:
            return None
        hit = space.by_len.get(eid.prefix.prefixlen, {}).get(int(eid.prefix.network_address))
        return None if hit is None else hit[1]

    def lookup(self, iid: int, addr: IPAddress, max_len: int | None = None) -> tuple[EidPrefix, V] | None:
        """Longest prefix containing addr (and no longer than max_len)."""
        space = self._space(iid, addr.version)
        if space is None:
            return None
        bits = _bits(addr.version)
        a = int(addr)
        for n in space.lengths:
            if max_len is not None and n > max_len:
                continue
            hit = space.by_len[n].get(a & (((1 << n) - 1) << (bits - n)) if n else 0)
            if hit is not None:
                return hit
        return None

    def longest_covering(self, eid: EidPrefix) -> tuple[EidPrefix, V] | None:
        """Longest stored prefix that equals or contains eid."""
        return self.lookup(eid.iid, eid.prefix.network_address, eid.prefix.prefixlen)

    def covering(self, eid: EidPrefix) -> list[tuple[EidPrefix, V]]:
        """Every stored prefix that equals or contains eid, longest first."""
        space = self._space(eid.iid, eid.prefix.version)
        if space is None:
            return []
        bits = _bits(eid.prefix.version)
        a = int(eid.prefix.network_address)
        out = []
        for n in space.lengths:
            if n <= eid.prefix.prefixlen:
                hit = space.by_len[n].get(a & (((1 << n) - 1) << (bits - n)) if n else 0)
                if hit is not None:
                    out.append(hit)
        return out

    def more_specifics(self, eid: EidPrefix, include_equal: bool = True) -> list[tuple[EidPrefix, V]]:
        """Stored prefixes inside eid (scans the longer mask lengths)."""
        space = self._space(eid.iid, eid.prefix.version)
        if space is None:
            return []
        out: list[tuple[EidPrefix, V]] = []
        for n in space.lengths:
            if n > eid.prefix.prefixlen or (include_equal and n == eid.prefix.prefixlen):
                # one space holds one family, so subnet_of compares like with like
                out.extend(v for v in space.by_len[n].values()
                           if v[0].prefix.subnet_of(eid.prefix))  # type: ignore[arg-type]
        return out

    def overlaps(self, eid: EidPrefix) -> bool:
        return bool(self.covering(eid)) or bool(self.more_specifics(eid))

    def items(self) -> Iterator[tuple[EidPrefix, V]]:
        for space in self._spaces.values():
            for n in space.lengths:
                yield from list(space.by_len[n].values())

    def keys(self) -> list[EidPrefix]:
        return [k for k, _ in self.items()]

    def values(self) -> list[V]:
        return [v for _, v in self.items()]


def host_prefix(iid: int, addr: IPAddress) -> EidPrefix:
    return EidPrefix(iid, ipaddress.ip_network(addr))


def least_specific_uncovered(iid: int, addr: IPAddress, configured: "LpmTable") -> EidPrefix | None:
    """The shortest prefix holding addr that overlaps no configured prefix.

    This is what a Map-Resolver returns in a negative Map-Reply for a
    non-EID: the ITR caches the widest possible hole, so it does not ask
    again for its neighbours. None when addr is inside a configured prefix.
    """
    bits = _bits(addr.version)
    if configured.lookup(iid, addr) is not None:
        return None
    for n in range(0, bits + 1):
        cand = EidPrefix(iid, ipaddress.ip_network((int(addr) >> (bits - n) << (bits - n) if n else 0, n))
                         if addr.version == 4 else
                         ipaddress.IPv6Network((int(addr) >> (bits - n) << (bits - n) if n else 0, n)))
        if not configured.more_specifics(cand):
            return cand
    return None


def eid_sort_key(eid: EidPrefix) -> tuple:
    """Orders EID prefixes of mixed families (EidPrefix's own order cannot)."""
    return (eid.iid, eid.prefix.version, int(eid.prefix.network_address), eid.prefix.prefixlen)
