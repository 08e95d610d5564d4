"""ITR: resolves map-cache misses through the Map-Resolver.

A miss sends an ECM'd Map-Request for the packet's destination to the
Map-Resolver (also when the packet hit a send-map-request or expired
negative entry: a site registered later inside a negative prefix is then
learnt), retried with exponential back-off; after the last retry the
destination is held down with a short entry following the miss action.

Rate limits (RFC 9301 5.3): at most one new Map-Request per destination per
second, whatever asks (miss, SMR, refresh), and at most `map-request-rate`
per second overall (a token bucket holding one second's worth). A miss that
finds the overall budget spent is dropped and counted (the data plane
reports the destination again with its next packet); a retry or refresh
waits for the next token. At most _MAX_PENDING requests are outstanding. A Map-Reply is accepted only with the nonce of an outstanding
request and only for records covering what we asked. Entries expire at their
TTL; entries the data plane reports as used are refreshed shortly before.
An SMR makes us re-query (through the mapping system, never trusting the
SMR's content) for entries we hold.

Publish/subscribe (RFC 9437): through a [[map-resolver]] with `subscribe`,
Map-Requests carry the N and I bits (our xTR-ID and site-ID). A Map-Notify is
accepted only for a subscription we made (its nonce is the request's nonce or
a later one, the Map-Server adds one per notification), only with a valid
HMAC under that resolver's key and our xTR-ID; its records are installed at
once (same coverage rules as a Map-Reply) and it is acknowledged. A
retransmitted notification is acknowledged again but not reinstalled.
Subscriptions end with the TTL of what they installed; refreshing a used
entry renews them. SMRs keep working alongside (peers that do not support
publish/subscribe).

Map-cache capacity: the daemon sets `capacity` to what the loaded data plane
holds (and `family_capacity`: each address family has maps of its own), less
what bulk-loaded tables take (daemon/bulk.py). Installing a new prefix into a full cache first evicts the least
recently used dynamic entry (used = reported by the data plane, or installed
or refreshed); static entries are never evicted (a config with more static
entries than the capacity is refused at start). One log line and a counter
per eviction.

RLOC probing: see lispctl.roles.probe; the ITR re-installs every entry using
a locator whose reachability changed, with that locator's reachable flag set
accordingly.

LISP-SEC (RFC 9303, lispctl.roles.lispsec): through a resolver with
`lisp-sec`, each Map-Request carries a fresh one-time key and a Map-Reply is
installed only as far as LISP-SEC verifies it (docs/security.md).
"""
from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

from lispctl.config import Config, MapResolverConfig
from lispctl.mapping.cache import CacheEntry, MapCache
from lispctl.mapping.lpm import host_prefix
from lispctl.mapping.types import EidPrefix, IPAddress, MapAction, Rloc
from lispctl.roles.base import (CONTROL_PORT, DATA_PORT, Effect, Effects, Endpoint, InstallMapping, MissEvent,
                                RemoveMapping)
from lispctl.roles.common import FOREVER_S, Counters, NonceSource, TokenBucket, decode
from lispctl.roles.holdq import resolution_timeout
from lispctl.roles.lispsec import ItrSec
from lispctl.roles.local import LocalSite
from lispctl.roles.mapsys import ResolverSet, within
from lispctl.roles.probe import RlocProber

if TYPE_CHECKING:  # nat.py imports this module
    from lispctl.roles.nat import NatRole
    from lispctl.roles.rtr import RtrRole
from lispctl.wire import (NO_ADDRESS, TTL_INFINITE, Address, EidRecord, EncapsulatedControlMessage, MalformedMessage,
                          RequestRecord,
                          MapNotify, MapNotifyAck, MapReply, MapRequest, from_eid_prefix,
                          locator_to_rloc, record_prefix, request_record, sign, source_eid_prefix,
                          verify)

_NONCE_MASK = (1 << 64) - 1
_NOTIFY_WINDOW = 1 << 32      # notifications of one subscription: request nonce + 0 .. 2^32-1

_MISS_ACTIONS = {"drop": MapAction.DROP, "natively-forward": MapAction.NATIVELY_FORWARD}
_NAT_MISS_TTL_S = 60.0     # a miss sent to the RTR while behind a NAT (on_miss)
_PER_EID_INTERVAL = 1.0   # RFC 9301 5.3: one Map-Request per destination per second
_MAX_PENDING = 4096       # outstanding requests (bounded further by the rate)


@dataclass
class _Pending:
    eid: EidPrefix                 # what we ask for
    source: IPAddress | None       # source EID of the packet that missed
    kind: str                      # miss | refresh | smr
    created: float = 0.0           # first asked (miss-to-install metric)
    sent_at: list[float] = field(default_factory=list)    # per nonce, for the RTT metric
    attempts: int = 0
    next_at: float = 0.0
    interval: float = 1.0
    nonces: list[int] = field(default_factory=list)
    downgrade: bool = False        # LISP-SEC "on": no ETR signs, ask without it


@dataclass
class _Sub:
    """A subscription we asked for (RFC 9437), keyed by the request's nonce."""
    asked: EidPrefix
    resolver: MapResolverConfig
    base: int                      # nonce of the subscribing Map-Request
    expires_at: float
    last: int | None = None        # highest notification nonce accepted

    def offset(self, nonce: int) -> int:
        return (nonce - self.base) & _NONCE_MASK


class ItrRole:
    name = "itr"
    pitr_bit = False               # Map-Request p bit (lispctl.roles.pitr sets it)
    # what the daemon hands to handle() (its message registry, by type)
    message_types = frozenset({MapReply.TYPE, MapRequest.TYPE, MapNotify.TYPE})

    def __init__(self, cfg: Config, site: LocalSite, nonce: NonceSource) -> None:
        self.cfg = cfg
        self.site = site
        self.nonce = nonce
        self.resolvers = [m.address for m in cfg.map_resolver]
        self.resolver_cfgs = list(cfg.map_resolver)
        self.xtr_id = cfg.xtr_id
        self.subs: dict[int, _Sub] = {}                # base nonce -> subscription
        self._sub_of: dict[EidPrefix, int] = {}        # asked EID -> its newest subscription
        self._sub_gc_at = 0.0
        self.cache = MapCache()
        self.capacity: int | None = None               # set by the daemon from the data plane
        self.family_capacity: dict[int, int] = {}      # version -> entries of that family at most
        self._lru: dict[EidPrefix, None] = {}          # dynamic entries, least recently used first
        self.pending: dict[EidPrefix, _Pending] = {}
        self._pending_wide: set[EidPrefix] = set()     # pending prefixes that are not host prefixes
        self._asked: dict[EidPrefix, float] = {}       # last Map-Request per EID, oldest first
        self._smr_later: dict[EidPrefix, float] = {}   # SMR re-queries held back by the rate limit
        self._bucket = TokenBucket(cfg.itr.map_request_rate, cfg.itr.map_request_rate)
        self.by_nonce: dict[int, EidPrefix] = {}
        self.holddown: dict[EidPrefix, float] = {}     # gave up until
        # (refresh time, seq, eid, installed_at): checked lazily against the cache
        self._refresh: list[tuple[float, int, EidPrefix, float]] = []
        self._seq = itertools.count()
        self.counters = Counters()
        self.resolver_set = ResolverSet(cfg, self.counters)   # scopes and failover: roles/mapsys.py
        self.sec = ItrSec(self.counters)                 # LISP-SEC (RFC 9303), per resolver
        self.prober = RlocProber(cfg.itr, nonce, site.usable_rlocs, self.counters)
        self.started = False
        self._now = 0.0
        # observe(name, seconds): "map_request_rtt" for each accepted Map-Reply,
        # "miss_to_install" when a miss's mapping is installed (daemon metrics).
        self.observe: Callable[[str, float], None] | None = None
        self.nat: NatRole | None = None      # a NatRole steering data to the RTR while behind a NAT
        self.rtr: RtrRole | None = None      # the RTR this ITR resolves for: never encapsulate to itself
        # misses handed to the RTR (on_miss): taken back when the NAT goes
        self._via_rtr: dict[EidPrefix, None] = {}

    def _fx(self) -> Effects:
        return Effects(default_src=self._src_for if self.cfg.is_mobile_node else None)

    def _src_for(self, dst: Endpoint) -> Endpoint | None:
        addr = self.site.source_for(dst.addr)
        return Endpoint(addr, CONTROL_PORT) if addr is not None else None

    # ------------------------------------------------------------ map-cache + probing
    def _cache_install(self, eid: EidPrefix, rlocs: tuple[Rloc, ...], action: MapAction,
                       ttl_s: float | None, now: float, source: str = "map-reply",
                       out: Effects | None = None) -> CacheEntry:
        old = self.cache.get(eid)
        if old is None and (self.capacity is not None or self.family_capacity) and out is not None:
            self._make_room(eid, out)
        entry = self.cache.install(eid, rlocs, action, ttl_s, now, source=source)
        self.prober.track(eid, old.rlocs if old else (), rlocs, now)
        self._lru.pop(eid, None)
        if ttl_s is not None:
            self._lru[eid] = None
        return entry

    def _make_room(self, eid: EidPrefix, out: Effects) -> None:
        capacity, version = self.capacity, eid.prefix.version
        family = self.family_capacity.get(version)
        while self._lru:
            if family is not None and self.cache.count(version) >= family:
                # that family's maps are full: its least recently used entry
                # goes (a scan past newer entries of the other family)
                victim = next((e for e in self._lru if e.prefix.version == version), None)
                if victim is None:
                    return
            elif capacity is not None and len(self.cache) >= capacity:
                victim = next(iter(self._lru))
            else:
                return
            old = self.cache.remove(victim)
            del self._lru[victim]
            if old is None:
                continue
            self._cache_dropped(old)
            self.holddown.pop(victim, None)
            out.items.append(RemoveMapping(victim))
            self.counters["evicted_lru"] += 1
            out.log(f"map-cache full ({self.capacity} entries, IPv{version} "
                    f"{self.family_capacity.get(version)}): evicted least recently used {victim} for {eid}")

    def _cache_dropped(self, entry: CacheEntry) -> None:
        self._lru.pop(entry.eid, None)
        self.prober.track(entry.eid, entry.rlocs, (), self._now)

    def _rlocs_for_dp(self, rlocs: Iterable[Rloc]) -> tuple[Rloc, ...]:
        out = self.prober.effective(rlocs) if self.prober.enabled else tuple(rlocs)
        if self.nat is not None and out:       # behind a NAT: all data to the RTR (roles/nat.py)
            out = self.nat.steer(out)
        if self.rtr is not None and out:       # an RTR's own RLOC is no locator for it (roles/rtr.py)
            out = self.rtr.steer(out)
        return out

    def forget(self, eid: EidPrefix) -> None:
        """Drop eid's cache entry without touching the data plane: the RTR
        installed that prefix itself (a confirmed NATed peer's EIDs), and a
        refresh or expiry of ours must not replace or remove its entry."""
        e = self.cache.get(eid)
        if e is None or e.static:
            return
        self.cache.remove(eid)
        self._cache_dropped(e)
        self.holddown.pop(eid, None)

    def reinstall_all(self, now: float) -> list[Effect]:
        """InstallMapping for every positive entry again (where data goes
        changed). Destinations a miss sent to the RTR (on_miss) are removed
        once their family's data no longer goes there: the next packet
        misses and is resolved from the RLOC it now leaves from."""
        out: list[Effect] = [InstallMapping(e.eid, self._rlocs_for_dp(e.rlocs), e.action, self._ttl_left(e, now))
                             for e in self.cache.entries() if e.rlocs]
        for eid in [e for e in self._via_rtr if self._nat_rtr(e.prefix.version) is None]:
            del self._via_rtr[eid]
            if self.cache.get(eid) is None:
                out.append(RemoveMapping(eid))
                self.counters["miss_via_rtr_removed"] += 1
        return out

    def _reachability_changed(self, addrs: Iterable[IPAddress], now: float, out: Effects) -> None:
        """Probing changed these locators' state: re-install the entries using them."""
        eids: dict[EidPrefix, None] = {}
        for a in addrs:
            for eid in sorted(self.prober.users(a), key=lambda e: (e.iid, e.prefix.version,
                                                                  int(e.prefix.network_address))):
                eids.setdefault(eid, None)
        for eid in eids:
            e = self.cache.get(eid)
            if e is None or not e.rlocs:
                continue
            out.items.append(InstallMapping(eid, self._rlocs_for_dp(e.rlocs), e.action, self._ttl_left(e, now)))
            self.counters["reinstalled_reachability"] += 1

    # ------------------------------------------------------------ start / timers
    def start(self, now: float) -> list[Effect]:
        """Install the static map-cache (tick() does this when not called)."""
        self.started = True
        self._now = now
        out: list[Effect] = []
        for entry in self.cfg.map_cache:
            rlocs = tuple(l.rloc() for l in entry.locator)
            self._cache_install(entry.eid, rlocs, entry.map_action, None, now, source="static")
            out.append(InstallMapping(entry.eid, self._rlocs_for_dp(rlocs), entry.map_action, FOREVER_S))
        return out

    def next_deadline(self) -> float | None:
        if not self.started:
            return 0.0
        times = [p.next_at for p in self.pending.values()]
        exp = self.cache.next_expiry()
        if exp is not None:
            times.append(exp)
        while self._refresh:
            at, _, eid, installed_at = self._refresh[0]
            e = self.cache.get(eid)
            if e is not None and e.installed_at == installed_at and self._refresh_at(e) is not None:
                times.append(at)
                break
            heapq.heappop(self._refresh)       # stale: replaced, removed or decided
        probe = self.prober.next_deadline()
        if probe is not None:
            times.append(probe)
        if self._smr_later:
            times.append(min(self._smr_later.values()))
        return min(times, default=None)

    def tick(self, now: float) -> list[Effect]:
        if not self.started:
            return self.start(now)
        self._now = now
        out = self._fx()
        for eid in [e for e, until in self.holddown.items() if until <= now]:
            del self.holddown[eid]
        while self._asked:
            eid, at = next(iter(self._asked.items()))
            if at > now - _PER_EID_INTERVAL:
                break
            del self._asked[eid]
        for p in [p for p in self.pending.values() if p.next_at <= now]:
            self._retry(p, now, out)
        for eid in [e for e, at in self._smr_later.items() if at <= now]:
            del self._smr_later[eid]
            e = self.cache.get(eid)
            if e is None:
                continue
            if eid in self.pending or not self._may_ask(eid, now):
                self._smr_later[eid] = max(now, self._asked.get(eid, now)) + _PER_EID_INTERVAL
                continue
            out.log(f"re-querying {eid} (SMR held back by the rate limit)")
            self._ask(_Pending(eid, None, "smr", interval=self.cfg.itr.map_request_interval), now, out)
        while self._refresh and self._refresh[0][0] <= now:
            _, _, eid, installed_at = heapq.heappop(self._refresh)
            e = self.cache.get(eid)
            if e is not None and e.installed_at == installed_at and self._refresh_at(e) is not None:
                self._maybe_refresh(e, now, out)
        for e in self.cache.expire(now):
            self._cache_dropped(e)
            out.items.append(RemoveMapping(e.eid))
            self.counters["expired"] += 1
            out.log(f"map-cache entry {e.eid} expired")
        if self.prober.enabled:
            self._reachability_changed(self.prober.tick(now, out), now, out)
        if now >= self._sub_gc_at:
            self._sub_gc_at = now + 30.0
            for base in [b for b, sub in self.subs.items() if sub.expires_at <= now]:
                self._drop_sub(base)
            for eid in [e for e, b in self._sub_of.items() if b not in self.subs]:
                del self._sub_of[eid]
        return out.items

    def _refresh_at(self, e: CacheEntry) -> float | None:
        """When a used entry should be refreshed; None when not (any more)."""
        if e.expires_at is None or e.refreshing or e.negative or e.source != "map-reply":
            return None
        ttl = e.expires_at - e.installed_at
        return e.expires_at - min(self.cfg.itr.refresh_before, ttl / 2)

    def _maybe_refresh(self, e: CacheEntry, now: float, out: Effects) -> None:
        e.refreshing = True      # decided, one way or the other
        if e.last_used is None or e.last_used < e.installed_at:
            return               # idle: let it lapse
        if e.eid not in self.pending and self._may_ask(e.eid, now):
            self._ask(_Pending(e.eid, None, "refresh", interval=self.cfg.itr.map_request_interval), now, out)

    # ------------------------------------------------------------ misses
    def on_miss(self, event: MissEvent, now: float) -> list[Effect]:
        """The data plane had no entry for event.eid (a host prefix)."""
        self._now = now
        self.counters["miss"] += 1
        out = self._fx()
        addr = event.eid.prefix.network_address
        entry = self.cache.lookup(event.eid.iid, addr)
        if entry is not None and entry.action != MapAction.SEND_MAP_REQUEST:
            if now - entry.installed_at < _PER_EID_INTERVAL:
                # reported before the entry reached the data plane (a burst in the ring)
                self.counters["miss_just_installed"] += 1
                return []
            # The data plane lost an entry we hold (e.g. restart): give it back.
            out.items.append(InstallMapping(entry.eid, self._rlocs_for_dp(entry.rlocs), entry.action,
                                            self._ttl_left(entry, now)))
            self.counters["miss_reinstalled"] += 1
            return out.items
        rtr = self._nat_rtr(addr.version)
        if rtr is not None:
            # Behind a NAT our Map-Request's ITR-RLOC is a private address no
            # Map-Reply reaches; all our data goes to the RTR anyway, and the
            # RTR resolves the destination itself (docs/nat.md). A short-lived
            # host entry: it goes when the NAT does.
            out.items.append(InstallMapping(event.eid, (Rloc(rtr, port=DATA_PORT),), MapAction.NO_ACTION,
                                            _NAT_MISS_TTL_S))
            self._via_rtr[event.eid] = None
            while len(self._via_rtr) > _MAX_PENDING:         # bounded: the oldest have expired
                del self._via_rtr[next(iter(self._via_rtr))]
            self.counters["miss_sent_to_rtr"] += 1
            return out.items
        # Ask for the destination itself, not a cached (negative) prefix around
        # it: the answer names the prefix, which may have changed.
        key = event.eid
        if key in self.pending or not self._may_ask(key, now):
            self.counters["miss_rate_limited"] += 1
            return []
        if key in self.holddown:
            self.counters["miss_held_down"] += 1
            return []
        if len(self.pending) >= _MAX_PENDING or (self._bucket.wait(now) > 0.0 and event.source is not None):
            # (no source: the daemon re-resolving an adopted entry, which
            # still forwards; it waits for a token instead, see _send_request)
            self.counters["miss_dropped_overall_limit"] += 1
            return []
        if any(p.iid == key.iid and p.prefix.version == addr.version and addr in p.prefix
               for p in self._pending_wide):
            self.counters["miss_rate_limited"] += 1      # a refresh/SMR of a covering prefix is out
            return []
        self._ask(_Pending(key, event.source, "miss", interval=self.cfg.itr.map_request_interval), now, out)
        return out.items

    def _nat_rtr(self, eid_version: int) -> IPAddress | None:
        if self.nat is None:
            return None
        for v in (eid_version, 10 - eid_version):
            rtr = self.nat.data_rtr(v)
            if rtr is not None:
                return rtr
        return None

    def resolution_timeout(self) -> float:
        """How long a miss may wait for its mapping before the ITR gives up:
        the daemon holds a missed packet at most that long (roles/holdq.py)."""
        i = self.cfg.itr
        return resolution_timeout(i.map_request_interval, i.map_request_backoff,
                                  i.map_request_max_interval, i.map_request_retries)

    def _may_ask(self, eid: EidPrefix, now: float) -> bool:
        last = self._asked.get(eid)
        return last is None or now - last >= _PER_EID_INTERVAL

    def _ttl_left(self, e: CacheEntry, now: float) -> float:
        left = e.ttl_left(now)
        return FOREVER_S if left is None else left

    def _ask(self, p: _Pending, now: float, out: Effects) -> None:
        p.created = now
        self.pending[p.eid] = p
        if p.eid.prefix.prefixlen != p.eid.prefix.max_prefixlen:
            self._pending_wide.add(p.eid)
        self._send_request(p, now, out)

    def _retry(self, p: _Pending, now: float, out: Effects) -> None:
        if p.attempts > self.cfg.itr.map_request_retries:
            self._give_up(p, now, out)
            return
        self._send_request(p, now, out)

    def _give_up(self, p: _Pending, now: float, out: Effects) -> None:
        self._drop_pending(p)
        self.counters["map_request_gave_up"] += 1
        out.log(f"no Map-Reply for {p.eid} after {p.attempts} Map-Requests")
        if p.kind != "miss":
            return                     # a refresh/SMR failure: the entry simply expires
        ttl = self.cfg.itr.unreachable_negative_ttl
        self.holddown[p.eid] = now + ttl
        # Hold the destination down in the data plane too, as the miss action says.
        if self.cfg.miss_action == "petr":
            rlocs = tuple(l.rloc() for l in self.cfg.proxy_etr)
            action = MapAction.NO_ACTION
        else:
            rlocs, action = (), _MISS_ACTIONS[self.cfg.miss_action]
        self._cache_install(p.eid, rlocs, action, ttl, now, source="unreachable", out=out)
        out.items.append(InstallMapping(p.eid, self._rlocs_for_dp(rlocs), action, ttl))

    def _drop_pending(self, p: _Pending) -> None:
        self.pending.pop(p.eid, None)
        self._pending_wide.discard(p.eid)
        for n in p.nonces:
            self.by_nonce.pop(n, None)
            self.sec.forget(n)

    def _send_request(self, p: _Pending, now: float, out: Effects) -> None:
        rlocs = self.site.usable_rlocs()
        mr_cfg = self.resolver_set.pick(p.eid, p.attempts, now)
        if mr_cfg is None:
            self.counters["map_request_no_resolver"] += 1
            self._drop_pending(p)
            return
        mr = mr_cfg.address
        if not rlocs:
            self.counters["map_request_no_rloc"] += 1
            out.log(f"cannot ask for {p.eid}: no usable local RLOC yet")
            p.attempts += 1
            p.next_at = now + p.interval
            p.interval = min(p.interval * self.cfg.itr.map_request_backoff, self.cfg.itr.map_request_max_interval)
            return
        if not self._bucket.take(now):
            self.counters["map_request_deferred"] += 1      # overall rate: wait for the next token
            p.next_at = now + max(self._bucket.wait(now), 0.001)
            return
        # The ECM's inner source is one of our RLOCs, preferably of the
        # Map-Resolver's family; an ITR whose RLOCs are all of the other
        # family still asks (RFC 9301 5.8: the ITR-RLOCs inside may be of any
        # family), and the outer header leaves from whatever local address of
        # the Map-Resolver's family the kernel picks.
        inner_src = next((a for a in rlocs if a.version == mr.version), None)
        eid_addr = p.eid.prefix.network_address
        if inner_src is None:
            fam = eid_addr.version
            inner_src = next((a for a in rlocs if a.version == fam), None)
            if inner_src is None and p.source is not None and p.source.version == fam:
                inner_src = p.source                  # the host EID that missed (as OOR does)
            if inner_src is None:
                inner_src = next((e.prefix.network_address for e in self.site.eids()
                                  if e.prefix.version == fam), rlocs[0])
        subscribe = mr_cfg.subscribe and self.xtr_id is not None
        nonce = self._subscription_nonce(p.eid) if subscribe else self.nonce()
        source_eid: Address = NO_ADDRESS
        if p.source is not None:
            source_eid, _ = from_eid_prefix(host_prefix(p.eid.iid, p.source))
        req = MapRequest(nonce, (request_record(p.eid, notify=subscribe),), tuple(rlocs[:32]),
                         source_eid=source_eid, smr_invoked=(p.kind == "smr"), pitr=self.pitr_bit,
                         xtr_id=self.xtr_id if subscribe else None,
                         site_id=self.cfg.site_id if subscribe else None)
        if subscribe:
            # until an answer tells us the mapping's TTL, keep it as long as we may retry
            self._add_sub(_Sub(p.eid, mr_cfg, nonce, now + max(120.0, self.cfg.itr.map_request_max_interval * 4)))
        # Inner header: to the EID asked for when the families agree (RFC 9301
        # 5.8), else to the Map-Resolver itself.
        inner_dst = eid_addr if eid_addr.version == inner_src.version else \
            mr if mr.version == inner_src.version else inner_src
        ecm = self.sec.protect(EncapsulatedControlMessage(req, inner_src, inner_dst, CONTROL_PORT, CONTROL_PORT),
                               "off" if p.downgrade else mr_cfg.lisp_sec, mr_cfg.lisp_sec_key,
                               mr_cfg.lisp_sec_key_id)
        if ecm is not None:             # None: LISP-SEC required, too many keys outstanding (retried)
            out.send(ecm.encode(), Endpoint(mr, CONTROL_PORT))
            self.resolver_set.sent(mr_cfg, nonce, now)
        p.nonces.append(nonce)
        p.sent_at.append(now)
        self.by_nonce[nonce] = p.eid
        self._asked.pop(p.eid, None)
        self._asked[p.eid] = now
        p.attempts += 1
        p.next_at = now + p.interval
        p.interval = min(p.interval * self.cfg.itr.map_request_backoff, self.cfg.itr.map_request_max_interval)
        self.counters["map_request_tx"] += 1
        out.log(f"Map-Request for {p.eid} to {mr} ({p.kind}, try {p.attempts})", f"nonce {nonce:#018x}")

    # ------------------------------------------------------------ datagrams
    def handle(self, data: bytes, src: Endpoint, dst: Endpoint, now: float) -> list[Effect]:
        self._now = now
        msg = decode(data)
        out = self._fx()
        if isinstance(msg, MapReply):
            if msg.probe and self.prober.enabled:
                consumed, changed = self.prober.on_reply(msg, src, now, out)
                if changed is not None:
                    self._reachability_changed([changed], now, out)
                if consumed:
                    return out.items
            self._on_reply(msg, src, now, out, data)
        elif isinstance(msg, MapRequest) and msg.smr:
            self._on_smr(msg, src, now, out)
        elif isinstance(msg, MapNotify):
            self._on_notify(data, msg, src, now, out)
        return out.items

    def _on_reply(self, msg: MapReply, src: Endpoint, now: float, out: Effects, data: bytes = b"") -> None:
        key = self.by_nonce.get(msg.nonce)
        p = self.pending.get(key) if key is not None else None
        if p is None:
            self.counters["map_reply_unknown_nonce"] += 1
            out.log(f"ignored Map-Reply from {src.addr}: no outstanding request with that nonce")
            return
        self.counters["map_reply_rx"] += 1
        verdict = self.sec.check(data or msg.encode(), msg)    # LISP-SEC: the records we may install
        if verdict.reason:
            out.log(f"{'ignored' if verdict.records is None else 'LISP-SEC'} Map-Reply from {src.addr}: "
                    f"{verdict.reason}", kind="lisp-sec-map-reply", peer=src.addr)
        if verdict.records is None and not verdict.protected:
            return                      # refused by LISP-SEC: no answer from the mapping system
        self.resolver_set.answered(msg.nonce)
        if verdict.downgrade:
            p.downgrade = True
            self._send_request(p, now, out)
        if verdict.records is None:
            return
        accepted, ttl_s, eids = self._accept_records(verdict.records, p.eid, now, out, "map_reply")
        if accepted:
            self._drop_pending(p)
            if self.observe is not None:
                self.observe("map_request_rtt", now - p.sent_at[p.nonces.index(msg.nonce)])
                if p.kind == "miss" and eids:
                    self.observe("miss_to_install", now - p.created)
            sub = self.subs.get(msg.nonce)
            if sub is not None:
                self._sub_installed(sub, eids, ttl_s, now)

    def _accept_records(self, records: Iterable[EidRecord], asked: EidPrefix, now: float, out: Effects,
                        what: str) -> tuple[bool, float | None, list[EidPrefix]]:
        """Install the records that cover `asked`; (any accepted, longest TTL, prefixes installed)."""
        accepted = False
        longest = None
        installed: list[EidPrefix] = []
        for rec in records:
            try:
                eid = record_prefix(rec)
            except (MalformedMessage, ValueError):
                self.counters[f"{what}_bad_record"] += 1
                continue
            usable: list[Rloc] = []
            for loc in rec.locators:
                try:
                    usable.append(locator_to_rloc(loc))
                except (MalformedMessage, ValueError):
                    # one locator we cannot use (an LCAF, a non-IP AFI) does not spoil the others
                    self.counters[f"{what}_locator_skipped"] += 1
            rlocs = tuple(usable)
            if rec.locators and not rlocs:
                self.counters[f"{what}_bad_record"] += 1
                continue
            if not within(asked, eid):
                # A record that does not cover what we asked could poison the cache.
                self.counters[f"{what}_record_not_asked"] += 1
                continue
            accepted = True
            if rec.ttl == 0:
                # RFC 9301 5.4: TTL 0 = do not cache; what we hold for it goes now.
                self._uncache(eid, out)
                continue
            ttl_s = FOREVER_S if rec.ttl == TTL_INFINITE else rec.ttl * 60.0
            longest = ttl_s if longest is None else max(longest, ttl_s)
            action = MapAction.NO_ACTION
            if not rlocs:
                try:
                    action = MapAction(rec.act)
                except ValueError:
                    action = MapAction.DROP
            if eid != asked and asked in self.holddown:
                del self.holddown[asked]
            self._install(eid, rlocs, action, ttl_s, now, out)
            installed.append(eid)
        return accepted, longest, installed

    # ------------------------------------------------------------ publish/subscribe
    def _add_sub(self, sub: _Sub) -> None:
        old = self._sub_of.get(sub.asked)
        if old is not None:
            self._drop_sub(old)            # the Map-Server keeps only the newest nonce
        self.subs[sub.base] = sub
        self._sub_of[sub.asked] = sub.base

    def _sub_installed(self, sub: _Sub, eids: list[EidPrefix], ttl_s: float | None, now: float) -> None:
        """A subscription's answer installed eids: it lives as long as they do,
        and a refresh of one of them renews it (nonce + 1, RFC 9437 section 5)."""
        if ttl_s is not None:
            sub.expires_at = max(sub.expires_at, now + ttl_s)
        for eid in eids:
            self._sub_of[eid] = sub.base

    def _drop_sub(self, base: int) -> None:
        sub = self.subs.pop(base, None)
        if sub is not None and self._sub_of.get(sub.asked) == base:
            del self._sub_of[sub.asked]

    def _subscription_nonce(self, eid: EidPrefix) -> int:
        """RFC 9437 section 5: renewing a subscription uses the last nonce plus one."""
        sub = self.subs.get(self._sub_of.get(eid, -1))
        if sub is None:
            return self.nonce()
        last = sub.last if sub.last is not None else sub.base
        nonce = (last + 1) & _NONCE_MASK
        return nonce if nonce not in self.by_nonce and nonce not in self.subs else self.nonce()

    def _find_sub(self, nonce: int) -> _Sub | None:
        sub = self.subs.get(nonce)
        if sub is not None:
            return sub
        best = None
        for s in self.subs.values():
            off = s.offset(nonce)
            if off < _NOTIFY_WINDOW and (best is None or off < best.offset(nonce)):
                best = s
        return best

    def _on_notify(self, data: bytes, msg: MapNotify, src: Endpoint, now: float, out: Effects) -> None:
        prefixes = []
        for rec in msg.records:
            try:
                prefixes.append(record_prefix(rec))
            except MalformedMessage:
                pass
        if prefixes and all(self.site.db.match(p) is not None for p in prefixes):
            return                          # about our own registration: the ETR's business
        sub = self._find_sub(msg.nonce)
        if sub is None or sub.expires_at <= now:
            self.counters["pubsub_notify_unsolicited"] += 1
            out.log(f"ignored Map-Notify from {src.addr}: no subscription with that nonce")
            return
        key = sub.resolver.key
        if key is None or msg.key_id != sub.resolver.key_id or not verify(data, key):
            self.counters["pubsub_notify_bad_auth"] += 1
            out.log(f"ignored Map-Notify from {src.addr}: bad authentication")
            return
        if msg.xtr_id is not None and msg.xtr_id != self.xtr_id:
            self.counters["pubsub_notify_wrong_xtr_id"] += 1
            out.log(f"ignored Map-Notify from {src.addr}: not our xTR-ID")
            return
        duplicate = sub.last is not None and sub.offset(msg.nonce) <= sub.offset(sub.last)
        if duplicate:
            self.counters["pubsub_notify_duplicate"] += 1    # our ack was lost: ack again
        else:
            sub.last = msg.nonce
            self.counters["pubsub_notify_rx"] += 1
            accepted, ttl_s, eids = self._accept_records(msg.records, sub.asked, now, out, "pubsub_notify")
            self._sub_installed(sub, eids, ttl_s, now)
            p = self.pending.get(sub.asked)
            if accepted and p is not None and sub.base in p.nonces:
                self._drop_pending(p)      # the confirmation answered the request already
            out.log(f"Map-Notify from {src.addr} for subscription {sub.asked}"
                    f"{'' if accepted else ' (no record for it)'}", f"nonce {msg.nonce:#018x}")
        ack = MapNotifyAck(msg.nonce, msg.records, key_id=msg.key_id, alg_id=msg.alg_id,
                           xtr_id=msg.xtr_id, site_id=msg.site_id)
        out.send(sign(ack, key), src)
        self.counters["pubsub_notify_ack_tx"] += 1

    def _uncache(self, eid: EidPrefix, out: Effects) -> None:
        old = self.cache.get(eid)
        if old is None or old.static:
            return
        self.cache.remove(eid)
        self._cache_dropped(old)
        self.holddown.pop(eid, None)
        out.items.append(RemoveMapping(eid))
        self.counters["removed_ttl_zero"] += 1
        out.log(f"map-cache entry {eid} removed (TTL 0)")

    def _install(self, eid: EidPrefix, rlocs: tuple[Rloc, ...], action: MapAction, ttl_s: float,
                 now: float, out: Effects) -> None:
        # A held-down host entry inside the new prefix is obsolete.
        # (held-down entries are the unreachable ones: far fewer than the cache)
        for held in [h for h in self.holddown if h != eid and within(h, eid)]:
            old = self.cache.get(held)
            if old is not None and old.source == "unreachable":
                self.cache.remove(old.eid)
                self._cache_dropped(old)
                self.holddown.pop(old.eid, None)
                out.items.append(RemoveMapping(old.eid))
        entry = self._cache_install(eid, rlocs, action, ttl_s, now, out=out)
        at = self._refresh_at(entry)
        if at is not None:
            heapq.heappush(self._refresh, (at, next(self._seq), eid, now))
        out.items.append(InstallMapping(eid, self._rlocs_for_dp(rlocs), action, ttl_s))
        self.counters["installed"] += 1
        what = ", ".join(str(r.address) for r in rlocs) if rlocs else f"negative, {action.name.lower()}"
        out.log(f"map-cache {eid} -> {what} (TTL {ttl_s / 60:.0f} min)")

    def _smr_target(self, msg: MapRequest, rec: RequestRecord) -> EidPrefix | None:
        """The remote prefix an SMR asks us to re-query. Two forms exist: the
        changed prefix in the Source-EID and one of OUR EIDs in the record
        (OOR, lispers.net, what our ETR sends: RFC 9301 6.1, the SMR goes to
        the ITRs of the sites the ETR caches), or the changed prefix in the
        record (older lispctl). A record inside our own database tells them
        apart."""
        eid = record_prefix(rec)
        if self.site.db.match(eid) is None:
            return eid
        return source_eid_prefix(msg.source_eid)

    def _on_smr(self, msg: MapRequest, src: Endpoint, now: float, out: Effects) -> None:
        self.counters["smr_rx"] += 1
        for rec in msg.records:
            try:
                eid = self._smr_target(msg, rec)
            except MalformedMessage:
                eid = None
            if eid is None:
                self.counters["smr_bad_eid"] += 1
                continue
            entry = self.cache.covering(eid) or next(
                (e for e in self.cache.entries() if within(e.eid, eid)), None)
            if entry is None or entry.static:
                self.counters["smr_not_cached"] += 1
                continue
            if entry.eid in self.pending or not self._may_ask(entry.eid, now):
                # Asked less than a second ago (or still waiting, possibly for
                # an answer that predates the change): one re-query when the
                # second is over, however many SMRs come meanwhile.
                at = self._asked.get(entry.eid, now) + _PER_EID_INTERVAL
                if entry.eid not in self._smr_later:
                    self._smr_later[entry.eid] = at
                    self.counters["smr_deferred"] += 1
                else:
                    self.counters["smr_rate_limited"] += 1
                continue
            out.log(f"SMR from {src.addr} for {eid}: re-querying {entry.eid}")
            self._ask(_Pending(entry.eid, None, "smr", interval=self.cfg.itr.map_request_interval), now, out)

    # ------------------------------------------------------------ data-plane feedback
    def on_used(self, eids: Iterable[EidPrefix], now: float) -> list[Effect]:
        """The data plane saw traffic for these map-cache prefixes since the
        last call. A used entry past its refresh point is refreshed now."""
        self._now = now
        out = self._fx()
        for eid in eids:
            if not self.cache.mark_used(eid, now):
                continue
            e = self.cache.get(eid) or self.cache.covering(eid)
            if e is not None and e.eid in self._lru:
                del self._lru[e.eid]
                self._lru[e.eid] = None          # most recently used now
            if e is not None and e.refreshing and e.eid not in self.pending and e.source == "map-reply" \
                    and e.expires_at is not None and not e.negative:
                at = e.expires_at - min(self.cfg.itr.refresh_before, (e.expires_at - e.installed_at) / 2)
                if at <= now < e.expires_at:
                    self._ask(_Pending(e.eid, None, "refresh", interval=self.cfg.itr.map_request_interval),
                              now, out)
        return out.items

    # ------------------------------------------------------------ API
    def reconfigure(self, cfg: Config, now: float) -> list[Effect]:
        """A new configuration (lispctl reload): the Map-Resolver list (used
        from the next Map-Request on) and the static map-cache (entries
        removed, added or changed are removed/installed at once)."""
        self._now = now
        old = {e.eid: e for e in self.cfg.map_cache}
        self.cfg = cfg
        self.resolvers = [m.address for m in cfg.map_resolver]
        self.resolver_cfgs = list(cfg.map_resolver)
        if [r.cfg for r in self.resolver_set.all] != list(cfg.map_resolver):
            self.resolver_set = ResolverSet(cfg, self.counters)   # new resolvers (scopes, lisp-sec...)
        if not self.started:
            return []
        out = self._fx()
        new = {e.eid: e for e in cfg.map_cache}
        for eid in old.keys() - new.keys():
            entry = self.cache.remove(eid)
            if entry is not None:
                self._cache_dropped(entry)
            out.items.append(RemoveMapping(eid))
        for eid, e in new.items():
            if old.get(eid) != e:
                rlocs = tuple(l.rloc() for l in e.locator)
                self._cache_install(eid, rlocs, e.map_action, None, now, source="static")
                out.items.append(InstallMapping(eid, self._rlocs_for_dp(rlocs), e.map_action, FOREVER_S))
        return out.items

    def snapshot(self) -> dict[str, Any]:
        now = self._now
        return {
            "map_cache": self.cache.snapshot(now),
            "pending": [{"eid": str(p.eid), "kind": p.kind, "attempts": p.attempts,
                         "next_try_in_s": round(max(0.0, p.next_at - now), 2)}
                        for p in self.pending.values()],
            "held_down": [{"eid": str(e), "for_s": round(t - now, 1)} for e, t in self.holddown.items()],
            "map_resolvers": [str(a) for a in self.resolvers],
            "map_resolver_state": self.resolver_set.snapshot(self._now),
            "subscriptions": [{"eid": str(s.asked), "map_resolver": str(s.resolver.address),
                               "notifications": 0 if s.last is None else s.offset(s.last) + 1,
                               "expires_in_s": round(max(0.0, s.expires_at - now), 1)}
                              for s in self.subs.values()],
            "rloc_probes": self.prober.snapshot(now),
            "counters": self.counters.snapshot(),
        }
