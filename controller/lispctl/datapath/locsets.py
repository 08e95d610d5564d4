"""Locator-set slot tables (pure Python, no kernel).

For each usable priority level (lowest first, 255 never), the reachable
locators of that priority share LISP_SLOTS slots in proportion to their
weights. The kernel takes slot[flow_hash % SLOTS] of the first level whose
locator is up, so one flow always lands on one locator and traffic splits by
weight.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from lispctl.mapping.types import Rloc


@dataclass(frozen=True)
class LocatorSet:
    locators: tuple[Rloc, ...]          # index i = LSB bit i
    levels: tuple[tuple[int, ...], ...]  # each exactly `slots` locator indexes
    lsb: int


def weighted_slots(indexes: Sequence[int], weights: Sequence[int], slots: int) -> tuple[int, ...]:
    """Largest-remainder apportionment of `slots` by weight, interleaved so a
    locator's slots spread evenly over the table."""
    if not indexes:
        return ()
    ws = list(weights) if any(weights) else [1] * len(weights)   # all zero: equal split
    total = sum(ws)
    quotas = [w * slots / total for w in ws]
    counts = [int(q) for q in quotas]
    order = sorted(range(len(ws)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in order[: slots - sum(counts)]:
        counts[i] += 1
    marks = sorted(((k + 0.5) / n, j) for j, n in enumerate(counts) for k in range(n))
    return tuple(indexes[j] for _, j in marks)


def build_locator_set(rlocs: Sequence[Rloc], max_locators: int, levels: int, slots: int) -> LocatorSet:
    usable = [r for r in rlocs if r.priority != 255]
    if len(usable) > max_locators:
        # keep the best: lowest priority, then highest weight; original order otherwise
        keep = set(id(r) for r in sorted(usable, key=lambda r: (r.priority, -r.weight))[:max_locators])
        usable = [r for r in usable if id(r) in keep]
    lsb = sum(1 << i for i, r in enumerate(usable) if r.reachable)
    tables = []
    for prio in sorted({r.priority for r in usable if r.reachable}):
        members = [i for i, r in enumerate(usable) if r.reachable and r.priority == prio]
        table = weighted_slots(members, [usable[i].weight for i in members], slots)
        if table:
            tables.append(table)
    return LocatorSet(tuple(usable), tuple(tables[:levels]), lsb & 0xFF)


def fixed_choice(ls: LocatorSet, slots: int) -> int:
    """1 + the locator index the kernel's lisp_pick (bpf/lisp_encap.h) returns
    for every flow hash, or 0 when the choice depends on the flow or nothing
    is usable. With one, the ITR's flow cache keeps the locator itself and a
    hit skips the locator set (bpf/lisp_flowcache.h)."""
    def usable(i: int) -> bool:
        return i < len(ls.locators) and ls.locators[i].reachable and ls.locators[i].priority != 255

    picks = set()
    for s in range(slots):
        pick = -1
        for table in ls.levels:
            pick = next((table[(s + j) % slots] for j in range(slots) if usable(table[(s + j) % slots])), -1)
            if pick >= 0:
                break
        picks.add(pick)
        if len(picks) > 1:
            return 0
    (only,) = picks
    return only + 1 if only >= 0 else 0
