"""A DDT Map-Resolver (RFC 8111 section 7): resolves an ITR's Map-Request by
walking the delegation tree with DDT Map-Requests (the ITR's ECM, re-sent
with the D bit) and following Map-Referrals.

Per resolution ("pending request", keyed by the ITR's nonce):
- start at the longest unexpired referral-cache entry covering the EID, or
  at the configured root nodes;
- send to one node of the current referral set; no answer within
  request-timeout: the next node of the set. A set exhausted: its cached
  referral is dropped and a walk that began in the cache starts once more
  at the roots; otherwise, or after max-attempts requests, give up (counted;
  no negative reply, which would black-hole the EID for its TTL: the ITR's
  retries and its own short unreachable entry take over);
- NODE-REFERRAL / MS-REFERRAL: cache the referral (unless the I bit says its
  set is incomplete, or its TTL is 0) and ask its nodes. A referral must be
  strictly more specific than the one it follows (else it is a loop) and
  cover the EID; at most max-referrals of them per resolution;
- MS-ACK: done, the Map-Server has forwarded the request to an ETR (or
  answered the ITR itself);
- MS-NOT-REGISTERED: ask the Map-Servers of the set not yet asked; when none
  is left, a negative Map-Reply (the referral's prefix and TTL, action
  mr.unregistered-action) to the ITR;
- DELEGATION-HOLE: a negative Map-Reply (natively-forward, the hole and its
  TTL) to the ITR; the hole is cached, so the next request inside it is
  answered at once;
- NOT-AUTHORITATIVE: a stale cached referral (the walk began in the cache:
  drop it, start once more at the roots) or a misconfigured node (the next
  node of the set; none left: give up).

A Map-Referral is taken only from the node the request went to, with the
nonce it carried; anything else is counted and ignored. Both tables are
bounded: pending requests (max-pending; more are dropped and counted) and the
referral cache (referral-cache-size; the oldest entry goes first).
"""
from __future__ import annotations

import dataclasses
import heapq
import itertools
from collections import OrderedDict
from dataclasses import dataclass, field

from lispctl.config import Config
from lispctl.mapping.lpm import LpmTable
from lispctl.mapping.types import EidPrefix, IPAddress, MapAction
from lispctl.roles.base import CONTROL_PORT, Effect, Effects, Endpoint
from lispctl.roles.common import Counters, decode, ip_only, reply_target
from lispctl.roles.ddt import ACT_NAMES, requested_prefix
from lispctl.wire import (DELEGATION_HOLE, MS_ACK, MS_NOT_REGISTERED, MS_REFERRAL, NODE_REFERRAL,
                          NOT_AUTHORITATIVE, EncapsulatedControlMessage, MalformedMessage, MapReferral,
                          MapReply, MapRequest, eid_record, record_prefix)


@dataclass
class Referral:
    """A referral-cache entry."""
    eid: EidPrefix
    act: int                             # NODE_REFERRAL, MS_REFERRAL or DELEGATION_HOLE
    targets: tuple[IPAddress, ...]
    expires_at: float
    ttl: int                             # minutes, as received
    hits: int = 0


@dataclass
class Pending:
    nonce: int
    want: EidPrefix
    ecm: EncapsulatedControlMessage      # the ITR's, as received
    ddt_bytes: bytes                     # the same with the D bit: what we send
    started: float
    at: EidPrefix | None                 # prefix of the referral being followed (None: the root)
    cached: EidPrefix | None             # the cache entry it came from, if any
    targets: list[IPAddress]
    tried: set = field(default_factory=set)
    current: IPAddress | None = None
    deadline: float = 0.0
    attempts: int = 0
    referrals: int = 0
    not_registered: EidPrefix | None = None
    not_registered_ttl: int = 1
    from_root: bool = False              # this walk started at the roots (no restart left)


class DdtResolverRole:
    name = "mr"

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        d = cfg.mr.ddt
        self.roots = tuple(d.root)
        self.timeout = d.request_timeout
        self.max_attempts = d.max_attempts
        self.max_referrals = d.max_referrals
        self.max_pending = d.max_pending
        self.cache_size = d.referral_cache_size
        self.cache: LpmTable[Referral] = LpmTable()
        self._order: OrderedDict[EidPrefix, None] = OrderedDict()     # insertion order, for eviction
        self.pending: dict[int, Pending] = {}
        self._timers: list[tuple[float, int, int]] = []               # (deadline, seq, nonce), lazy
        self._seq = itertools.count()
        self.counters = Counters()
        self._now = 0.0

    # ------------------------------------------------------------ referral cache
    def _cached(self, want: EidPrefix, now: float) -> Referral | None:
        for eid, ref in self.cache.covering(want):
            if ref.expires_at > now:
                return ref
            self._uncache(eid)
            self.counters["referral_cache_expired"] += 1
        return None

    def _cache(self, ref: Referral) -> None:
        if ref.eid not in self._order and len(self._order) >= self.cache_size:
            old, _ = self._order.popitem(last=False)
            self.cache.remove(old)
            self.counters["referral_cache_evicted"] += 1
        self._order[ref.eid] = None
        self._order.move_to_end(ref.eid)
        self.cache.insert(ref.eid, ref)

    def _uncache(self, eid: EidPrefix) -> None:
        if self.cache.remove(eid) is not None:
            self._order.pop(eid, None)

    # ------------------------------------------------------------ timers
    def next_deadline(self) -> float | None:
        heap = self._timers
        while heap:
            at, _, nonce = heap[0]
            p = self.pending.get(nonce)
            if p is not None and p.deadline == at:
                return at
            heapq.heappop(heap)
        return None

    def tick(self, now: float) -> list[Effect]:
        self._now = now
        out = Effects()
        while (at := self.next_deadline()) is not None and at <= now:
            _, _, nonce = heapq.heappop(self._timers)
            p = self.pending[nonce]
            self.counters["ddt_request_timeout"] += 1
            out.log(f"no Map-Referral from {p.current} for {p.want}")
            self._next_target(p, now, out)
        return out.items

    # ------------------------------------------------------------ datagrams
    def handle(self, data: bytes, src: Endpoint, dst: Endpoint, now: float) -> list[Effect]:
        self._now = now
        msg = decode(data)
        if isinstance(msg, MapReferral):
            return self._on_referral(msg, src, now)
        if (isinstance(msg, EncapsulatedControlMessage) and isinstance(msg.message, MapRequest)
                and not msg.to_etr and not msg.ddt):
            return self._on_request(msg, now)
        return []

    def _on_request(self, ecm: EncapsulatedControlMessage, now: float) -> list[Effect]:
        self.counters["map_request_rx"] += 1
        req: MapRequest = ecm.message
        want = requested_prefix(req)
        if want is None:
            self.counters["map_request_bad_eid"] += 1
            return []
        old = self.pending.get(req.nonce)
        if old is not None:
            # the ITR retrying (its retry goes on where the first one is), or a nonce clash
            self.counters["map_request_in_progress" if old.want == want else "map_request_nonce_clash"] += 1
            return []
        out = Effects()
        ref = self._cached(want, now)
        if ref is not None and ref.act == DELEGATION_HOLE:
            ref.hits += 1
            self.counters["negative_from_cache"] += 1
            # what is left of the hole's TTL, in whole minutes (at least one)
            left = max(1, min(ref.ttl, int((ref.expires_at - now) // 60) + 1))
            self._negative(ecm, ref.eid, MapAction.NATIVELY_FORWARD, left, out)
            return out.items
        if len(self.pending) >= self.max_pending:
            self.counters["pending_full"] += 1
            return []
        if ref is not None:
            ref.hits += 1
            self.counters["referral_cache_hit"] += 1
            at, targets = ref.eid, list(ref.targets)
        else:
            self.counters["referral_cache_miss"] += 1
            at, targets = None, list(self.roots)
        p = Pending(req.nonce, want, ecm, dataclasses.replace(ecm, ddt=True, to_ms=False).encode(), now, at,
                    ref.eid if ref is not None else None, targets, from_root=ref is None)
        self.pending[req.nonce] = p
        self._next_target(p, now, out)
        return out.items

    def _next_target(self, p: Pending, now: float, out: Effects) -> None:
        """Ask the next node of p's referral set, or give up."""
        if p.current is not None:
            p.tried.add(p.current)
        left = [t for t in p.targets if t not in p.tried]
        if not left or p.attempts >= self.max_attempts:
            if p.not_registered is not None:
                self._finish(p)
                self._negative(p.ecm, p.not_registered, self._unregistered_action(), p.not_registered_ttl, out)
                self.counters["negative_not_registered"] += 1
                return
            if p.at is not None:
                # every node of this referral failed: forget it, so later
                # requests ask higher up the tree (and see a re-delegation)
                self._uncache(p.at)
            if not p.from_root and p.attempts < self.max_attempts:
                self._restart(p, now, out)
                return
            self._finish(p)
            self.counters["resolution_failed"] += 1
            out.log(f"DDT resolution of {p.want} failed after {p.attempts} requests")
            return
        # spread load over the set, deterministically per request
        target = left[p.nonce % len(left)]
        p.current = target
        p.attempts += 1
        p.deadline = now + self.timeout
        heapq.heappush(self._timers, (p.deadline, next(self._seq), p.nonce))
        out.send(p.ddt_bytes, Endpoint(target, CONTROL_PORT))
        self.counters["ddt_request_tx"] += 1
        out.log(f"DDT Map-Request for {p.want} to {target}", f"nonce {p.nonce:#018x} attempt {p.attempts}")

    def _restart(self, p: Pending, now: float, out: Effects) -> None:
        """A walk that began at a cached referral went nowhere: once more from the roots."""
        self.counters["restart_from_root"] += 1
        p.at, p.cached, p.targets, p.tried, p.current = None, None, list(self.roots), set(), None
        p.from_root = True
        out.log(f"DDT resolution of {p.want}: cached referral failed, asking the root")
        self._next_target(p, now, out)

    def _finish(self, p: Pending) -> None:
        self.pending.pop(p.nonce, None)
        p.deadline = 0.0

    def _unregistered_action(self) -> MapAction:
        return MapAction.SEND_MAP_REQUEST if self.cfg.mr.unregistered_action == "send-map-request" \
            else MapAction.DROP

    def _negative(self, ecm: EncapsulatedControlMessage, eid: EidPrefix, act: MapAction, ttl: int,
                  out: Effects) -> None:
        req: MapRequest = ecm.message
        target = reply_target(req.itr_rlocs, ecm.inner_sport)
        if target is None:
            self.counters["map_request_no_itr_rloc"] += 1
            return
        out.send(MapReply(req.nonce, (eid_record(eid, (), ttl=ttl, act=int(act)),)).encode(), target)
        self.counters["negative_reply_tx"] += 1
        out.log(f"negative Map-Reply for {eid}: {act.name.lower()} TTL {ttl} min to {target.addr}")

    def _on_referral(self, msg: MapReferral, src: Endpoint, now: float) -> list[Effect]:
        self.counters["map_referral_rx"] += 1
        p = self.pending.get(msg.nonce)
        if p is None:
            self.counters["map_referral_unknown_nonce"] += 1
            return []
        if src.addr != p.current:
            # bound to the node we asked: anyone else could steer us anywhere
            self.counters["map_referral_wrong_source"] += 1
            return []
        out = Effects()
        try:
            rec = msg.records[0]
            eid = record_prefix(rec)
        except (IndexError, MalformedMessage):
            self.counters["map_referral_bad"] += 1
            self._next_target(p, now, out)
            return out.items
        act = rec.act
        self.counters[f"map_referral_rx_{ACT_NAMES.get(act, 'unknown').replace('-', '_')}"] += 1
        w = p.want
        if act != NOT_AUTHORITATIVE and not (eid.iid == w.iid and eid.prefix.version == w.prefix.version
                                             and w.prefix.network_address in eid.prefix):
            self.counters["map_referral_not_covering"] += 1
            self._next_target(p, now, out)
            return out.items
        if act in (NODE_REFERRAL, MS_REFERRAL):
            if p.at is not None and eid.prefix.prefixlen <= p.at.prefix.prefixlen:
                self.counters["referral_loop"] += 1
                out.log(f"referral loop for {w}: {eid} from {src.addr} is not more specific than {p.at}")
                self._finish(p)
                return out.items
            targets = ip_only([r.address for r in rec.referrals if r.priority != 255])
            if not targets:
                self.counters["map_referral_bad"] += 1
                self._next_target(p, now, out)
                return out.items
            p.referrals += 1
            if p.referrals > self.max_referrals:
                self.counters["referral_too_deep"] += 1
                self._finish(p)
                return out.items
            if not rec.incomplete and rec.ttl > 0:
                self._cache(Referral(eid, act, tuple(targets), now + 60.0 * rec.ttl, rec.ttl))
            p.at, p.cached, p.targets, p.tried, p.current = eid, None, targets, set(), None
            p.not_registered = None
            out.log(f"{ACT_NAMES[act]} for {w}: {eid} -> {', '.join(map(str, targets))}")
            self._next_target(p, now, out)
        elif act == MS_ACK:
            self._finish(p)
            self.counters["resolved"] += 1
            out.log(f"{w} resolved through Map-Server {src.addr} ({eid})")
        elif act == MS_NOT_REGISTERED:
            p.not_registered, p.not_registered_ttl = eid, rec.ttl
            # peers it names that the referral we followed did not: ask them too
            for t in ip_only([r.address for r in rec.referrals if r.priority != 255]):
                if t not in p.targets and len(p.targets) < 32:
                    p.targets.append(t)
            self._next_target(p, now, out)
        elif act == DELEGATION_HOLE:
            self._finish(p)
            if rec.ttl > 0:
                self._cache(Referral(eid, act, (), now + 60.0 * rec.ttl, rec.ttl))
            self._negative(p.ecm, eid, MapAction.NATIVELY_FORWARD, rec.ttl, out)
            self.counters["negative_delegation_hole"] += 1
        else:                                # NOT-AUTHORITATIVE, or an action we do not know
            out.log(f"{src.addr} is not authoritative for {w}")
            if not p.from_root:
                # a stale cached referral, most likely: drop it and start over at the root
                for eid in (p.cached, p.at):
                    if eid is not None:
                        self._uncache(eid)
                p.current = None
                self._restart(p, now, out)
            else:
                self._next_target(p, now, out)
        return out.items

    # ------------------------------------------------------------ API
    def snapshot(self) -> dict:
        now = self._now
        cache = [{"eid": str(r.eid), "type": ACT_NAMES.get(r.act, str(r.act)),
                  "referrals": [str(t) for t in r.targets], "ttl_min": r.ttl,
                  "expires_in_s": round(max(0.0, r.expires_at - now), 1), "hits": r.hits}
                 for _, r in itertools.islice(self.cache.items(), 1000)]
        return {"ddt_roots": [str(r) for r in self.roots], "referral_cache": cache,
                "referral_cache_size": len(self.cache), "pending": len(self.pending),
                "counters": self.counters.snapshot()}
