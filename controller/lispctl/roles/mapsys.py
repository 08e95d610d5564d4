"""Several mapping systems at once in one xTR, and Map-Resolver failover.

A [[map-server]] or [[map-resolver]] with `eid-prefix` serves only those EID
prefixes (a whole instance ID: "[5]0.0.0.0/0" and "[5]::/0"); one without
serves everything else. The ETR registers each database prefix with the Map-Servers whose
scope covers it most specifically (else with the unscoped ones); the ITR
resolves an EID through the resolvers chosen the same way.

Failover: a resolver with a Map-Request unanswered for `itr.map-resolver-timeout`
seconds (no Map-Reply to any request sent through it since) is skipped for
`itr.map-resolver-holddown` seconds, then tried again; while it is skipped the
next resolver of the same set takes the first attempt of every resolution.
When every resolver of the set is skipped, they are used anyway, in turn.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from lispctl.config import Config, MapResolverConfig, MapServerConfig
from lispctl.mapping.types import EidPrefix
from lispctl.roles.common import Counters

_NONCES_KEPT = 4096        # nonce -> resolver, for requests still unanswered


def within(a: EidPrefix, b: EidPrefix) -> bool:
    """a equals b or lies inside it (same instance ID and family)."""
    return a.iid == b.iid and a.prefix.version == b.prefix.version and a.prefix.subnet_of(b.prefix)


def _scope_len(prefixes, eid: EidPrefix) -> int:
    """The mask length of the most specific of prefixes covering eid; -1: none."""
    return max((p.prefix.prefixlen for p in prefixes if within(eid, p)), default=-1)


def most_specific(items, eid: EidPrefix) -> list:
    """The items (with .eid_prefix) whose scope covers eid most specifically;
    the unscoped ones when no scope covers it."""
    best, out = -1, []
    for it in items:
        n = _scope_len(it.eid_prefix, eid) if it.eid_prefix else -1
        if n > best:
            best, out = n, [it]
        elif n == best and n >= 0:
            out.append(it)
    return out if best >= 0 else [it for it in items if not it.eid_prefix]


def registers_with(servers: list[MapServerConfig], ms: MapServerConfig, eid: EidPrefix) -> bool:
    """Whether the ETR registers eid with ms."""
    return any(m is ms for m in most_specific(servers, eid))


@dataclass
class _Resolver:
    cfg: MapResolverConfig
    waiting_since: float | None = None     # oldest request unanswered since the last answer
    down_until: float = 0.0
    down_count: int = 0
    requests: int = 0
    answers: int = 0


class ResolverSet:
    def __init__(self, cfg: Config, counters: Counters) -> None:
        self.timeout = cfg.itr.map_resolver_timeout
        self.holddown = cfg.itr.map_resolver_holddown
        self.all = [_Resolver(r) for r in cfg.map_resolver]
        self.by_addr = {r.cfg.address: r for r in self.all}
        self._nonces: OrderedDict[int, _Resolver] = OrderedDict()
        self.counters = counters

    def candidates(self, eid: EidPrefix) -> list[_Resolver]:
        cfgs = most_specific([r.cfg for r in self.all], eid)
        return [self.by_addr[c.address] for c in cfgs]

    def _down(self, r: _Resolver, now: float) -> bool:
        if r.down_until > now:
            return True
        if r.waiting_since is not None and now - r.waiting_since >= self.timeout:
            r.down_until = now + self.holddown
            r.waiting_since = None
            r.down_count += 1
            self.counters["map_resolver_skipped"] += 1
            return True
        return False

    def pick(self, eid: EidPrefix, attempt: int, now: float) -> MapResolverConfig | None:
        cands = self.candidates(eid)
        if not cands:
            return None
        live = [r for r in cands if not self._down(r, now)] or cands
        return live[attempt % len(live)].cfg

    def sent(self, mr: MapResolverConfig, nonce: int, now: float) -> None:
        r = self.by_addr[mr.address]
        r.requests += 1
        if r.waiting_since is None:
            r.waiting_since = now
        self._nonces[nonce] = r
        if len(self._nonces) > _NONCES_KEPT:
            self._nonces.popitem(last=False)

    def answered(self, nonce: int) -> None:
        r = self._nonces.pop(nonce, None)
        if r is not None:
            r.answers += 1
            r.waiting_since = None
            r.down_until = 0.0

    def snapshot(self, now: float) -> list[dict]:
        for r in self.all:
            self._down(r, now)
        return [{"address": str(r.cfg.address), "eid_prefix": [str(p) for p in r.cfg.eid_prefix],
                 "skipped_for_s": round(max(0.0, r.down_until - now), 1), "times_skipped": r.down_count,
                 "requests": r.requests, "answers": r.answers}
                for r in self.all]
