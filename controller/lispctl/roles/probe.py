"""RLOC probing for the ITR (RFC 9300 section 10.1, RFC 9301 section 5.2 P bit).

One probe state per locator address in the map-cache, whatever the number of
EID prefixes using it: a Map-Request with the P bit, sent directly to the
locator's port 4342 from our RLOC of its family, with its own nonce. A
Map-Reply with the P bit and a nonce we sent marks the locator reachable and
gives its round-trip time. A probe unanswered for `timeout` is lost and is
retried at once; `retries` lost in a row mark the locator unreachable (then
it is probed every `interval` until it answers again). Detection takes at
most interval + retries * timeout after the path breaks.

Reachability found here is combined with the R bit the ETR sent: a locator
is used only when both say reachable (`effective`).
"""
from __future__ import annotations

import dataclasses
import heapq
import itertools
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from lispctl.config import ItrConfig
from lispctl.mapping.lpm import eid_sort_key
from lispctl.mapping.types import EidPrefix, IPAddress, Rloc
from lispctl.roles.base import CONTROL_PORT, Effects, Endpoint
from lispctl.roles.common import Counters, NonceSource
from lispctl.wire import MapReply, MapRequest, request_record

_RECENT = 4          # late replies to one of the last few probes still count


@dataclass
class ProbeState:
    address: IPAddress
    users: set[EidPrefix] = field(default_factory=set)        # EID prefixes whose entries use it
    reachable: bool = True
    misses: int = 0                                # probes lost in a row
    outstanding: int | None = None                 # nonce of the probe we wait for
    last_sent: float | None = None
    next_send: float = 0.0
    due: float = 0.0                               # when the prober must look at it next
    rtt: float | None = None
    last_reply: float | None = None
    sent: OrderedDict[int, float] = field(default_factory=OrderedDict)    # nonce -> time


class RlocProber:
    def __init__(self, cfg: ItrConfig, nonce: NonceSource, rlocs: Callable[[], list[IPAddress]],
                 counters: Counters) -> None:
        self.interval = cfg.rloc_probe_interval
        self.timeout = min(cfg.rloc_probe_timeout, cfg.rloc_probe_interval or cfg.rloc_probe_timeout)
        self.retries = cfg.rloc_probe_retries
        self.enabled = self.interval > 0
        self.nonce = nonce
        self.rlocs = rlocs                 # our usable RLOCs, for sources and ITR-RLOCs
        self.counters = counters
        self.states: dict[IPAddress, ProbeState] = {}
        self.by_nonce: dict[int, IPAddress] = {}
        self._heap: list[tuple[float, int, IPAddress]] = []
        self._seq = itertools.count()

    # ------------------------------------------------------------ map-cache bookkeeping
    def track(self, eid: EidPrefix, old: Iterable[Rloc], new: Iterable[Rloc], now: float) -> None:
        """The map-cache entry eid changed its locators from old to new."""
        if not self.enabled:
            return
        new_addrs = list(dict.fromkeys(r.address for r in new))
        for addr in {r.address for r in old} - set(new_addrs):
            st = self.states.get(addr)
            if st is not None:
                st.users.discard(eid)
                if not st.users:
                    self._forget(st)
        for addr in new_addrs:
            st = self.states.get(addr)
            if st is None:
                # a locator we just learned: probe it now to know its RTT and state
                st = self.states[addr] = ProbeState(addr, next_send=now)
                self._schedule(st, now)
            st.users.add(eid)

    def _forget(self, st: ProbeState) -> None:
        del self.states[st.address]
        for n in st.sent:
            self.by_nonce.pop(n, None)

    def effective(self, rlocs: Iterable[Rloc]) -> tuple[Rloc, ...]:
        """rlocs as the data plane should use them: unreachable if probing says so."""
        out = []
        for r in rlocs:
            st = self.states.get(r.address)
            if r.reachable and st is not None and not st.reachable:
                r = dataclasses.replace(r, reachable=False)
            out.append(r)
        return tuple(out)

    def users(self, addr: IPAddress) -> set[EidPrefix]:
        st = self.states.get(addr)
        return set(st.users) if st else set()

    # ------------------------------------------------------------ timers
    def _schedule(self, st: ProbeState, at: float) -> None:
        st.due = at
        heapq.heappush(self._heap, (at, next(self._seq), st.address))

    def next_deadline(self) -> float | None:
        while self._heap:
            at, _, addr = self._heap[0]
            st = self.states.get(addr)
            if st is not None and st.due == at:
                return at
            heapq.heappop(self._heap)
        return None

    def tick(self, now: float, out: Effects) -> list[IPAddress]:
        """Send due probes, count lost ones; returns addresses whose reachability changed."""
        changed = []
        while self._heap and self._heap[0][0] <= now:
            at, _, addr = heapq.heappop(self._heap)
            st = self.states.get(addr)
            if st is None or st.due != at:
                continue
            if self._due(st, now, out):
                changed.append(addr)
        return changed

    def _due(self, st: ProbeState, now: float, out: Effects) -> bool:
        changed = False
        # last_sent is set whenever a probe is outstanding (_send sets both)
        if st.outstanding is not None and st.last_sent is not None and now >= st.last_sent + self.timeout:
            st.outstanding = None
            st.misses += 1
            self.counters["rloc_probe_lost"] += 1
            if st.misses >= self.retries and st.reachable:
                st.reachable = False
                changed = True
                self.counters["rloc_unreachable"] += 1
                out.log(f"RLOC {st.address} unreachable: {st.misses} probes unanswered")
            # retry at once while deciding; once down, probe at the normal pace
            st.next_send = now if st.misses < self.retries else st.last_sent + self.interval
        if st.outstanding is None and now >= st.next_send:
            self._send(st, now, out)
        self._schedule(st, st.last_sent + self.timeout if st.outstanding is not None and st.last_sent is not None
                       else st.next_send)
        return changed

    def _send(self, st: ProbeState, now: float, out: Effects) -> None:
        ours = self.rlocs()
        src = next((a for a in ours if a.version == st.address.version), None)
        if src is None or not st.users:
            self.counters["rloc_probe_no_source"] += 1
            st.next_send = now + self.interval
            return
        nonce = self.nonce()
        # our RLOC of the probed family first: the ETR answers ITR-RLOC[0] of a family it has
        itr_rlocs = tuple([src] + [a for a in ours if a != src])[:32]
        req = MapRequest(nonce, (request_record(min(st.users, key=eid_sort_key)),), itr_rlocs, probe=True)
        out.send(req.encode(), Endpoint(st.address, CONTROL_PORT), Endpoint(src, CONTROL_PORT))
        st.outstanding = nonce
        st.last_sent = now
        st.sent[nonce] = now
        self.by_nonce[nonce] = st.address
        while len(st.sent) > _RECENT:
            old, _ = st.sent.popitem(last=False)
            self.by_nonce.pop(old, None)
        self.counters["rloc_probe_tx"] += 1

    # ------------------------------------------------------------ replies
    def on_reply(self, msg: MapReply, src: Endpoint, now: float, out: Effects) -> tuple[bool, IPAddress | None]:
        """(consumed, address whose reachability changed)."""
        addr = self.by_nonce.get(msg.nonce)
        if addr is None:
            return False, None
        st = self.states[addr]
        sent_at = st.sent.pop(msg.nonce)
        del self.by_nonce[msg.nonce]
        self.counters["rloc_probe_reply_rx"] += 1
        st.rtt = now - sent_at
        st.last_reply = now
        st.misses = 0
        if st.outstanding == msg.nonce:
            st.outstanding = None
            st.next_send = sent_at + self.interval
            self._schedule(st, st.next_send)
        elif st.outstanding is None:
            # a late answer: the path works again, back to the normal pace
            st.next_send = max(now, (st.last_sent or now)) + self.interval
            self._schedule(st, st.next_send)
        if not st.reachable:
            st.reachable = True
            self.counters["rloc_reachable_again"] += 1
            out.log(f"RLOC {addr} reachable again (RTT {st.rtt * 1000:.1f} ms)")
            return True, addr
        return True, None

    def snapshot(self, now: float) -> list[dict[str, Any]]:
        return [{"address": str(st.address), "reachable": st.reachable, "misses": st.misses,
                 "rtt_ms": None if st.rtt is None else round(st.rtt * 1000, 3),
                 "last_reply_s_ago": None if st.last_reply is None else round(now - st.last_reply, 1),
                 "next_probe_in_s": round(max(0.0, st.due - now), 2),
                 "eids": sorted(str(e) for e in st.users)}
                for st in self.states.values()]
