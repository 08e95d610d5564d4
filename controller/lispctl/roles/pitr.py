"""Proxy-ITR (RFC 6832 section 5): an ITR for hosts that do not speak LISP.

The PITR attracts Internet traffic toward its EID aggregates (BGP, through
lispctl.net.announce) and encapsulates it toward the sites. It is the ITR
state machine (lispctl.roles.itr) with four differences:

- Map-Requests carry the p bit, the PITR's own RLOCs as ITR-RLOCs and a
  Source-EID of AFI 0: the packet's source is a non-LISP host, not an EID
  of ours, so there is nothing to put there (RFC 6832 section 5).
- The data plane runs in PITR mode (Datapath.set_pitr): packets no map-cache
  entry covers are the host's own traffic and left alone. The aggregates are
  installed as send-Map-Request entries, so traffic to them misses (and
  follows the miss action) until a more specific answer is cached; an
  aggregate is never removed from the data plane, only replaced.
- Misses outside the aggregates are ignored (the data plane sends none).
  The sources are the whole Internet, so resolutions are bounded: at most
  `max-pending` at a time and `map-request-rate` new ones per second (a
  token bucket); misses beyond that are counted and dropped (the data plane
  rate-limits miss events per destination, not over all destinations).
- Serving state: every health-interval each Map-Resolver is asked about its
  own address, which is not an EID, so the resolver answers itself (a
  negative Map-Reply) without involving any ETR. The aggregates are announced
  while one resolver answered within health-timeout and withdrawn (Announce
  effects) when none did, so a PITR cut off from the mapping system stops
  attracting traffic it cannot deliver.
"""
from __future__ import annotations

import ipaddress

from lispctl.config import Config
from lispctl.mapping.types import EidPrefix, IPAddress, MapAction
from lispctl.roles.base import (CONTROL_PORT, Announce, Effect, Effects, Endpoint, InstallMapping,
                                MissEvent, RemoveMapping)
from lispctl.roles.common import FOREVER_S, NonceSource, decode
from lispctl.roles.itr import ItrRole
from lispctl.roles.local import LocalSite
from lispctl.wire import (NO_ADDRESS, EncapsulatedControlMessage, MapReply, MapRequest,
                          request_record)

_MAX_HEALTH_NONCES = 64          # outstanding health probes kept (oldest forgotten)


class PitrRole(ItrRole):
    name = "pitr"
    pitr_bit = True

    def __init__(self, cfg: Config, site: LocalSite, nonce: NonceSource) -> None:
        super().__init__(cfg, site, nonce)
        assert cfg.pitr is not None
        self.pcfg = cfg.pitr
        self.aggregates: tuple[EidPrefix, ...] = tuple(cfg.pitr.eid_prefixes)
        self._health_nonces: dict[int, IPAddress] = {}     # nonce -> resolver asked
        self.last_answer: dict[IPAddress, float] = {}      # resolver -> last health answer
        self._next_health = 0.0
        self.announced = False
        self._announced_at: float | None = None
        self._tokens = cfg.pitr.map_request_rate
        self._tokens_at = 0.0

    # ------------------------------------------------------------ aggregates
    def _covered(self, eid: EidPrefix) -> bool:
        return any(a.iid == eid.iid and a.prefix.version == eid.prefix.version
                   and eid.prefix.subnet_of(a.prefix) for a in self.aggregates)

    def _aggregate_entry(self, agg: EidPrefix) -> InstallMapping:
        return InstallMapping(agg, (), MapAction.SEND_MAP_REQUEST, FOREVER_S)

    def _keep_aggregates(self, effects: list[Effect]) -> list[Effect]:
        """An answer for exactly an aggregate replaces its entry; when that
        entry expires the aggregate goes back to send-Map-Request instead of
        leaving the data plane (which would hand its traffic back to the
        Internet, and so to us again)."""
        aggs = set(self.aggregates)
        return [self._aggregate_entry(e.eid) if isinstance(e, RemoveMapping) and e.eid in aggs else e
                for e in effects]

    # ------------------------------------------------------------ Role
    def start(self, now: float) -> list[Effect]:
        out = super().start(now)
        out += [self._aggregate_entry(a) for a in self.aggregates
                if self.cache.get(a) is None]          # a static entry for it wins
        self._next_health = now
        return out

    def next_deadline(self) -> float | None:
        d = super().next_deadline()
        times = [t for t in (d, self._next_health, self._serving_until()) if t is not None]
        return min(times, default=None)

    def tick(self, now: float) -> list[Effect]:
        first = not self.started
        out = self._keep_aggregates(super().tick(now))
        if first:
            return out
        if now >= self._next_health:
            self._next_health = now + self.pcfg.health_interval
            fx = Effects()
            self._health_probe(now, fx)
            out += fx.items
        out += self._announce_state(now)
        return out

    def handle(self, data: bytes, src: Endpoint, dst: Endpoint, now: float) -> list[Effect]:
        self._now = now
        msg = decode(data)
        if isinstance(msg, MapReply) and not msg.probe and msg.nonce in self._health_nonces:
            mr = self._health_nonces.pop(msg.nonce)
            self.last_answer[mr] = now
            self.counters["health_answers"] += 1
            return self._announce_state(now)
        return self._keep_aggregates(super().handle(data, src, dst, now))

    def on_miss(self, event: MissEvent, now: float) -> list[Effect]:
        if not self._covered(event.eid):
            self.counters["miss_outside_aggregates"] += 1
            return []
        if len(self.pending) >= self.pcfg.max_pending:
            self.counters["miss_pending_full"] += 1
            return []
        rate = self.pcfg.map_request_rate
        self._tokens = min(rate, self._tokens + (now - self._tokens_at) * rate)
        self._tokens_at = now
        if self._tokens < 1.0:
            self.counters["miss_rate_limited_global"] += 1
            return []
        self._tokens -= 1.0
        # The source is a non-LISP host: the Map-Request carries no Source-EID (AFI 0).
        return self._keep_aggregates(super().on_miss(MissEvent(event.eid, None), now))

    def on_used(self, eids, now: float) -> list[Effect]:
        return self._keep_aggregates(super().on_used(eids, now))

    # ------------------------------------------------------------ serving state
    def serving(self, now: float) -> bool:
        return any(now - t <= self.pcfg.health_timeout for t in self.last_answer.values())

    def _serving_until(self) -> float | None:
        if not self.announced or not self.last_answer:
            return None
        return max(self.last_answer.values()) + self.pcfg.health_timeout + 1e-3

    def _announce_state(self, now: float) -> list[Effect]:
        up = self.serving(now)
        if up == self.announced:
            return []
        self.announced = up
        self._announced_at = now
        self.counters["announced" if up else "withdrawn"] += 1
        fx = Effects()
        fx.items.append(Announce(self.aggregates, up))
        fx.log(f"EID aggregates {', '.join(map(str, self.aggregates))} "
               f"{'announced: a Map-Resolver answers' if up else 'withdrawn: no Map-Resolver answers'}")
        return fx.items

    def _health_probe(self, now: float, out: Effects) -> None:
        rlocs = self.site.usable_rlocs()
        for mr in self.resolvers:
            inner_src = next((a for a in rlocs if a.version == mr.version), None)
            if inner_src is None:
                self.counters["health_no_rloc"] += 1
                continue
            nonce = self.nonce()
            while len(self._health_nonces) >= _MAX_HEALTH_NONCES:
                self._health_nonces.pop(next(iter(self._health_nonces)))
            self._health_nonces[nonce] = mr
            asked = EidPrefix(0, ipaddress.ip_network(mr))
            req = MapRequest(nonce, (request_record(asked),), tuple(rlocs[:32]), source_eid=NO_ADDRESS,
                             pitr=True)
            ecm = EncapsulatedControlMessage(req, inner_src, mr, CONTROL_PORT, CONTROL_PORT)
            out.send(ecm.encode(), Endpoint(mr, CONTROL_PORT))
            self.counters["health_requests"] += 1

    # ------------------------------------------------------------ API
    def snapshot(self) -> dict:
        snap = super().snapshot()
        now = self._now
        snap["pitr"] = {
            "eid_prefixes": [str(a) for a in self.aggregates],
            "announced": self.announced,
            "serving": self.serving(now),
            "since_s": None if self._announced_at is None else round(now - self._announced_at, 1),
            "announce_table": self.pcfg.announce_table or None,
            "map_resolvers": [{"address": str(mr),
                               "last_answer_s": None if mr not in self.last_answer
                               else round(now - self.last_answer[mr], 1)}
                              for mr in self.resolvers],
        }
        return snap
