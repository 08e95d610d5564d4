"""Change-Priority Message (CPM) receiver of an xTR (seed 004 section 4,
docs/cpm.md).

A hypervisor that finished migrating a VM tells its xTR the new priority of
the xTR's locators for the VM's EID and the addresses the VM was talking
with. The xTR checks, in this order and counting every refusal:

1. the rate limits (per sending address, overall) - checking a MAC costs;
2. the message decodes and its key ID names a configured key;
3. the HMAC-SHA-256 over the whole message (wire/cpm.py);
4. the replay guard: the timestamp is within `max_skew` of our clock and
   (key ID, timestamp, nonce) was not accepted before. Accepted guards are
   kept until they are too old to pass the skew check (2 x max_skew), so a
   replay is refused by one test or the other; the table is bounded and,
   full, refuses (fails closed) rather than forgets;
5. the EID is exactly one of our database entries.

Then it gives all our locators of that entry the new priority, re-registers
at once and SMRs the ITRs that asked for it (EtrRole.mapping_changed), and
SMRs the ITRs that serve each listed correspondent: the locators of the
correspondent's mapping in our map-cache, or, when we have none, once our
ITR has resolved it (we ask, and look again after every Map-Reply, for at
most `resolve_timeout`).
"""
from __future__ import annotations

import ipaddress
from typing import Callable

from lispctl.config import Config
from lispctl.mapping.types import EidPrefix, IPAddress
from lispctl.roles.base import CONTROL_PORT, Effect, Effects, Endpoint, MissEvent, Send
from lispctl.roles.common import Counters, NonceSource
from lispctl.roles.ratelimit import RateLimiter
from lispctl.wire import (ALG_HMAC_SHA256, MAP_REPLY, SHARED_EXTENSION, InstanceId, MalformedMessage,
                          MapRequest, decode_cpm, from_eid_prefix, is_cpm, request_record, to_eid_prefix,
                          verify_cpm)

MAX_CORRESPONDENTS = 64        # per CPM; the rest are ignored (counted)
MAX_SMR_RLOCS = 8              # SMRs per correspondent mapping
MAX_PENDING = 256              # correspondents waiting for a mapping
MAX_GUARDS = 4096              # accepted (key ID, timestamp, nonce) remembered


class CpmRole:
    name = "cpm"
    # CPMs; Map-Replies only to notice a correspondent's mapping arriving
    # (the ITR, fed first, installs it)
    message_types = frozenset({SHARED_EXTENSION, MAP_REPLY})

    def __init__(self, cfg: Config, etr, itr, nonce: NonceSource, *, wall_clock: Callable[[float], float]) -> None:
        """etr: the EtrRole of this device (required); itr: its ItrRole or
        None. wall_clock(now) -> Unix time in seconds at monotonic `now`
        (the daemon passes the system clock, read when asked: an xTR that
        booted before NTP stepped its clock must not refuse every CPM)."""
        self.cfg = cfg.cpm
        self.etr = etr
        self.itr = itr
        self.site = etr.site
        self.nonce = nonce
        self.wall_clock = wall_clock
        self.limiter = RateLimiter(self.cfg.rate_per_source, self.cfg.rate)
        self.guards: dict[tuple[int, int, int], float] = {}      # -> forget after (monotonic)
        self.pending: dict[EidPrefix, tuple[EidPrefix, float]] = {}  # correspondent -> (VM EID, give up at)
        self.counters = Counters()
        self.changes: list[dict] = []                            # last few accepted, for the API
        self._now = 0.0

    # ------------------------------------------------------------ receive
    def handle(self, data: bytes, src: Endpoint, dst: Endpoint, now: float) -> list[Effect]:
        self._now = now
        out = Effects()
        if data and data[0] >> 4 == MAP_REPLY:
            if self.pending:
                self._check_pending(now, out)
            return out.items
        if not is_cpm(data):
            self.counters["shared_extension_not_cpm"] += 1
            return []
        self.counters["cpm_rx"] += 1
        if self.limiter.allow(src.addr, now) is not None:
            self.counters["cpm_rate_limited"] += 1
            return []
        try:
            msg = decode_cpm(data)
            eid = to_eid_prefix(msg.eid, msg.mask_len)
        except MalformedMessage as e:
            self.counters["cpm_malformed"] += 1
            out.log(f"malformed Change-Priority Message from {src.addr}: {e}", kind="cpm_malformed", peer=src.addr)
            return out.items
        key = self.cfg.keys.get(msg.key_id)
        if key is None or msg.alg_id != ALG_HMAC_SHA256 or not verify_cpm(data, msg, key):
            self.counters["cpm_bad_auth"] += 1
            out.log(f"Change-Priority Message from {src.addr} refused: bad authentication (key ID {msg.key_id})",
                    kind="cpm_bad_auth", peer=src.addr)
            return out.items
        if not self._fresh(msg, now, src, out):
            return out.items
        if self.site.db.get(eid) is None:
            self.counters["cpm_unknown_eid"] += 1
            out.log(f"Change-Priority Message from {src.addr} for {eid}: not one of our database entries",
                    kind="cpm_unknown_eid", peer=src.addr)
            return out.items
        self._apply(eid, msg, src, now, out)
        return out.items

    def _fresh(self, msg, now: float, src: Endpoint, out: Effects) -> bool:
        """The replay guard (only for authenticated messages: nothing else
        may fill the table)."""
        skew = abs(msg.timestamp_ms / 1000.0 - self.wall_clock(now))
        if skew > self.cfg.max_skew:
            self.counters["cpm_stale"] += 1
            out.log(f"Change-Priority Message from {src.addr} refused: timestamp {skew:.1f} s from our clock",
                    kind="cpm_stale", peer=src.addr)
            return False
        guard = (msg.key_id, msg.timestamp_ms, msg.nonce)
        if guard in self.guards:
            self.counters["cpm_replayed"] += 1
            out.log(f"Change-Priority Message from {src.addr} refused: replayed", kind="cpm_replayed", peer=src.addr)
            return False
        for g in [g for g, t in self.guards.items() if t <= now]:
            del self.guards[g]
        if len(self.guards) >= MAX_GUARDS:
            self.counters["cpm_guard_table_full"] += 1
            return False
        self.guards[guard] = now + 2 * self.cfg.max_skew
        return True

    def _apply(self, eid: EidPrefix, msg, src: Endpoint, now: float, out: Effects) -> None:
        changed = self.site.set_priority(eid, msg.priority)
        self.counters["cpm_accepted"] += 1
        if changed:
            # re-register now and SMR the ITRs that asked for it (the ETR's usual targets)
            out.items.extend(self.etr.mapping_changed(changed, now))
        else:
            self.counters["cpm_priority_unchanged"] += 1
        done = {e.dst.addr for e in out.items if isinstance(e, Send) and e.dst.port == CONTROL_PORT}
        corr = msg.correspondents[:MAX_CORRESPONDENTS]
        if len(msg.correspondents) > len(corr):
            self.counters["cpm_correspondents_ignored"] += len(msg.correspondents) - len(corr)
        for a in corr:
            host = _host_prefix(a)
            if host is None:
                self.counters["cpm_correspondent_not_ip"] += 1
                continue
            self._smr_correspondent(host, eid, now, out, done)
        self.changes = (self.changes + [{"eid": str(eid), "priority": msg.priority, "from": str(src.addr),
                                         "correspondents": len(corr)}])[-8:]
        out.log(f"Change-Priority Message from {src.addr}: {eid} priority {msg.priority}, "
                f"{len(corr)} correspondent(s)")

    # ------------------------------------------------------------ SMRs to correspondents' ITRs
    def _smr_correspondent(self, host: EidPrefix, vm: EidPrefix, now: float, out: Effects,
                           done: set | None = None) -> None:
        entry = self.itr.cache.lookup(host.iid, host.prefix.network_address) if self.itr else None
        if entry is not None and entry.rlocs:
            targets = [r.address for r in entry.rlocs if r.priority < 255 and r.reachable][:MAX_SMR_RLOCS]
            for t in targets:
                if done is not None and t in done:
                    continue            # already SMR'd as one of the ETR's usual targets
                self._send_smr(vm, entry.eid, t, out)
                if done is not None:
                    done.add(t)
            return
        if entry is not None or self.itr is None:
            # a negative entry (not a LISP site: a PITR serves it) or no ITR to ask
            self.counters["cpm_correspondent_no_itr"] += 1
            return
        if host not in self.pending and len(self.pending) >= MAX_PENDING:
            self.counters["cpm_pending_full"] += 1
            return
        self.pending[host] = (vm, now + self.cfg.resolve_timeout)
        self.counters["cpm_correspondent_resolving"] += 1
        out.items.extend(self.itr.on_miss(MissEvent(host, vm.prefix.network_address), now))

    def _send_smr(self, vm: EidPrefix, theirs: EidPrefix, target: IPAddress, out: Effects) -> None:
        # the ETR's SMR form: Source-EID = the prefix that changed, record = the
        # receiver's own EID (OOR acts only on SMRs naming one of its EIDs)
        src_eid, _ = from_eid_prefix(vm)
        rlocs = self.site.usable_rlocs()
        smr = MapRequest(self.nonce(), (request_record(theirs),), tuple(rlocs[:32]), source_eid=src_eid,
                         smr=True)
        out.send(smr.encode(), Endpoint(target, CONTROL_PORT))
        self.counters["smr_tx"] += 1
        out.log(f"SMR to {target} for {vm} (Change-Priority Message correspondent)")

    def _check_pending(self, now: float, out: Effects) -> None:
        for host, (vm, until) in list(self.pending.items()):
            entry = self.itr.cache.lookup(host.iid, host.prefix.network_address)
            if entry is not None:
                del self.pending[host]
                self._smr_correspondent(host, vm, now, out)
            elif until <= now:
                del self.pending[host]
                self.counters["cpm_correspondent_unresolved"] += 1

    # ------------------------------------------------------------ timers / API
    def tick(self, now: float) -> list[Effect]:
        self._now = now
        out = Effects()
        if self.pending:
            self._check_pending(now, out)
        return out.items

    def next_deadline(self) -> float | None:
        return min((t for _, t in self.pending.values()), default=None)

    def snapshot(self) -> dict:
        return {"keys": sorted(self.cfg.keys), "priority": {str(e): p for e, p in self.site.priority.items()},
                "recent": list(self.changes), "resolving": len(self.pending),
                "counters": self.counters.snapshot()}


def _host_prefix(a) -> EidPrefix | None:
    iid = 0
    if isinstance(a, InstanceId):
        iid, a = a.iid, a.address
    if not isinstance(a, (ipaddress.IPv4Address, ipaddress.IPv6Address)) or iid >= 1 << 24:
        return None
    return EidPrefix(iid, ipaddress.ip_network(a))
