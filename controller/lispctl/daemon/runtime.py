"""The event-loop core of a device: feeds roles, carries out their effects.

Everything protocol-related happens in the roles (sans-IO); this module only
moves bytes, time and miss events in, and Sends/mapping changes/log lines out,
in the order the roles returned them. Nothing a peer sends and no bug in a
role may stop it: bad datagrams are counted, role exceptions are logged with
their traceback and counted.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from lispctl.mapping.lpm import eid_sort_key
from lispctl.mapping.types import EidPrefix, MapAction, Rloc
from lispctl.datapath.errors import DatapathError
from lispctl.wire.errors import MalformedMessage
from lispctl.roles.base import (CONTROL_PORT, DATA_PORT, Announce, Endpoint, InstallMapping, Log, MissEvent,
                                RemoveMapping, Role, Send)

from .adopt import ADOPT_GRACE_S, ADOPTED_ROLE, host_of, inherited_mappings
from .logsummary import LogSummary
from .udp import ControlSockets

log = logging.getLogger("lispctl.daemon")

# How often per-mapping data-plane counters are read to find used entries.
USAGE_POLL_S = 5.0
# Miss events may take at most about half of the loop: after a batch that
# took longer than this, the ring buffer is left alone for as long again
# (events that do not fit in the ring meanwhile are lost in the data plane,
# which is what a miss storm should cost), so the API and control packets
# are served between batches.
MISS_BATCH_BUDGET_S = 0.005
proto_log = logging.getLogger("lispctl.proto")


@dataclass
class CacheEntry:
    """The daemon's own record of what it told the data plane (for the API)."""
    eid: EidPrefix
    rlocs: tuple[Rloc, ...]
    action: MapAction
    ttl_s: float
    installed_at: float            # runtime clock
    role: str

    def to_json(self, now: float) -> dict:
        return {
            "eid": str(self.eid), "iid": self.eid.iid, "prefix": str(self.eid.prefix),
            "action": self.action.name.lower().replace("_", "-"),
            "rlocs": [{"address": str(r.address), "priority": r.priority, "weight": r.weight,
                       "reachable": r.reachable, **({"port": r.port} if r.port else {})}
                      for r in self.rlocs],
            "ttl_s": self.ttl_s,
            "expires_in_s": round(max(0.0, self.installed_at + self.ttl_s - now), 1),
            "role": self.role,
        }


class Runtime:
    """Runs named roles on one event loop.

    `datapath` is optional (an MS/MR-only device has none); when present it
    must offer set_mapping, delete_mapping and, for miss events, miss_fd()
    and poll_misses().
    """

    def __init__(self, roles: Iterable[tuple[str, Role]], *, datapath: Any = None,
                 control_port: int = CONTROL_PORT,
                 binds: Sequence[str] = ("0.0.0.0", "::"), workers: int = 0,
                 adopt: Sequence[Any] = ()) -> None:
        """workers: bind sockets for that many Map-Register worker processes
        (daemon/msworkers.py); adopt: serve these bound sockets (a worker)."""
        self.workers = workers
        self.adopt = list(adopt)
        self.ms_workers: Any = None         # the Map-Server's worker processes (daemon/msworkers.py)
        self.roles: list[tuple[str, Role]] = list(roles)
        # The message registry: control message type (the first 4 bits) ->
        # the roles that take it, in config order. A role names its types in
        # `message_types`; one that does not is offered every datagram.
        self.by_type: list[list[tuple[str, Role]]] = [
            [(n, r) for n, r in self.roles
             if (types := getattr(r, "message_types", None)) is None or t in types]
            for t in range(16)]
        self.logsum = LogSummary()
        self._logsum_timer: asyncio.TimerHandle | None = None
        self.datapath = datapath
        self.announcer: Any = None          # carries out Announce (a PITR's aggregates)
        self.control_port = control_port
        self.binds = [str(b) for b in binds]
        # Listed up front so `lispctl counters` shows zeros instead of omitting them.
        self.counters: Counter[str] = Counter(dict.fromkeys(
            ("datagrams_rx", "malformed", "unhandled", "role_errors", "effect_errors", "sends",
             "send_errors", "installs", "removals", "misses", "ticks"), 0))
        self.cache: dict[EidPrefix, CacheEntry] = {}
        self.sockets: ControlSockets | None = None
        self._fast: Any = None              # _fast_path()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._miss_fd: int | None = None
        self.held: Any = None               # packets held while they resolve (daemon/held.py)
        self._reassembly: Any = None        # the data plane's reassembly path, if it has one
        self._last_tick = float("-inf")
        self._usage: dict[EidPrefix, int] = {}
        self._usage_timer: asyncio.TimerHandle | None = None
        self._adopt_timer: asyncio.TimerHandle | None = None
        self.adopt_grace_s = ADOPT_GRACE_S
        self.started_wall = time.time()
        self.started = 0.0

    # -- lifecycle -------------------------------------------------------
    def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.started = self.now()
        self.started_wall = time.time()
        # Deadlines are re-read once per batch of datagrams: nothing can run
        # in between, so that is the same as after each one, and cheaper.
        self.sockets = ControlSockets(self.loop, self._received, port=self.control_port,
                                      binds=self.binds, batch_done=self._batch_done,
                                      workers=self.workers, adopt=self.adopt)
        self.sockets.send_failed = self._queued_send_failed
        self._fast = self._fast_path()
        self.sockets.fast = None if log.isEnabledFor(logging.DEBUG) else self._fast
        if self.datapath is not None and any(hasattr(r, "on_miss") for _, r in self.roles):
            fd_of = getattr(self.datapath, "miss_fd", None)
            if fd_of is not None:
                self._miss_fd = fd_of()
                self.loop.add_reader(self._miss_fd, self._misses_ready)
                self.held = self._held_packets()
        # The ETR's path for outer fragments (RFC 9300 7): the stack reassembles
        # them, lispctl.datapath.reassembled decapsulates on UDP 4341. An RTR
        # with a data plane has it too: NATed xTRs' data keepalives reach it
        # there (docs/nat.md); fragments for it (no local EIDs) are dropped, counted.
        if self.datapath is not None and any(name in ("etr", "rtr") for name, _ in self.roles) \
                and hasattr(self.datapath, "open_reassembly"):
            try:
                self._reassembly = self.datapath.open_reassembly()
            except OSError as exc:
                log.warning("no path for fragmented LISP packets (UDP %d): %s", 4341, exc)
            else:
                for fd in self._reassembly.fds():
                    self.loop.add_reader(fd, self._reassembly.handle, fd)
                # NAT traversal: control from and to port 4341 goes through
                # these sockets (bound to 4341 already; docs/nat.md)
                self._reassembly.on_control = self._received_on_data_port
                if self.held is not None:
                    self.held.data_port_sender = self._reassembly.send_control
                reasm = self._reassembly
                self.sockets.port_senders[DATA_PORT] = (
                    lambda payload, dst, src:
                    reasm.send_control(payload, (str(dst.addr), dst.port), str(src.addr)))
        if self.datapath is not None and hasattr(self.datapath, "mapping_counters") \
                and any(hasattr(r, "on_used") for _, r in self.roles):
            self._usage_timer = self.loop.call_later(USAGE_POLL_S, self._poll_usage)
        now = self.now()
        for name, role in self.roles:
            start = getattr(role, "start", None)
            if start is not None:
                self._guarded(name, "start", lambda: start(now))
        self._adopt()
        self._reschedule()

    def _adopt(self) -> None:
        """Map-cache entries a previous daemon left in the pinned maps keep
        forwarding; the roles are asked to resolve each again (a miss on the
        prefix's first address), and what no role re-installs within
        adopt_grace_s is removed (_drop_unclaimed)."""
        if self.datapath is None:
            return
        try:
            inherited = inherited_mappings(self.datapath, self.cache)
        except Exception:
            self.counters["adopt_errors"] += 1
            log.exception("reading the inherited map-cache failed")
            return
        if not inherited:
            return
        now = self.now()
        for eid, (action, rlocs) in inherited.items():
            self.cache[eid] = CacheEntry(eid, rlocs, action, self.adopt_grace_s, now, ADOPTED_ROLE)
        self.counters["adopted"] += len(inherited)
        log.info("adopted %d map-cache entries from the pinned data plane; re-resolving them "
                 "(removed after %.0f s unless re-learnt)", len(inherited), self.adopt_grace_s)
        self._adopt_timer = self._live_loop().call_later(self.adopt_grace_s, self._drop_unclaimed)
        for eid in inherited:
            event = MissEvent(host_of(eid), None)
            for name, role in self.roles:
                on_miss = getattr(role, "on_miss", None)
                if on_miss is not None:
                    self._guarded(name, "adopt", lambda: on_miss(event, now))

    def _drop_unclaimed(self) -> None:
        self._adopt_timer = None
        for eid in [e for e, c in self.cache.items() if c.role == ADOPTED_ROLE]:
            try:
                self.datapath.delete_mapping(eid)
            except Exception:
                self.counters["effect_errors"] += 1
                log.exception("removing adopted entry %s failed", eid)
                continue
            del self.cache[eid]
            self.counters["adopted_dropped"] += 1
            log.info("adopted map-cache entry %s not re-learnt: removed", eid)

    def _held_packets(self):
        """Misses that drop their packet hand it over (roles/holdq.py); it is
        held for at most the ITR's resolution timeout."""
        from lispctl.roles.holdq import HoldQueue

        from .held import HeldPackets
        timeouts = [r.resolution_timeout() for _, r in self.roles if hasattr(r, "resolution_timeout")]
        local_rlocs = getattr(self.datapath, "local_rlocs", None)
        if not timeouts or local_rlocs is None:
            return None
        return HeldPackets(HoldQueue(max_age_s=max(timeouts)), local_rlocs, self.now, self.loop)

    def _held_counters(self) -> None:
        for k, v in self.held.counters().items():
            self.counters[k] = v

    def close(self) -> None:
        if self.held is not None:
            self.held.close()
        if self._logsum_timer is not None:
            self._logsum_timer.cancel()
            self._logsum_timer = None
        for line in self.logsum.flush(float("inf")):
            proto_log.info("%s", line)
        if self._adopt_timer is not None:
            self._adopt_timer.cancel()
            self._adopt_timer = None
        if self._usage_timer is not None:
            self._usage_timer.cancel()
            self._usage_timer = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._miss_fd is not None and self.loop is not None:
            self.loop.remove_reader(self._miss_fd)
            self._miss_fd = None
        if self._reassembly is not None and self.loop is not None:
            for fd in self._reassembly.fds():
                self.loop.remove_reader(fd)
            self._reassembly.close()
            self._reassembly = None
        if self.sockets is not None:
            self.sockets.close()
            self.sockets = None

    def now(self) -> float:
        # Monotonic seconds: the loop's clock, so timer handles and roles agree.
        return self.loop.time() if self.loop is not None else time.monotonic()

    # -- inputs ----------------------------------------------------------
    def _datagram(self, data: bytes, src: Endpoint, dst: Endpoint) -> None:
        self._received(data, src, dst)
        self._reschedule()

    def _fast_path(self) -> Any:
        """A role's fast path (MapServerRole.fast_path: refreshes of known
        registrations answered without effects or dispatch), used while
        that role alone takes the datagrams of its type."""
        for _, role in self.roles:
            offer = getattr(role, "fast_path", None)
            got = offer() if offer is not None else None
            if got is not None and [r for _, r in self.by_type[got[0]]] == [role]:
                return got[1]
        return None

    def _batch_done(self) -> None:
        """After each batch of datagrams: count what the fast path answered
        (a datagram received, a Send carried out, as any other; and
        fast_path), then
        re-read deadlines."""
        sockets = self.sockets
        if sockets is not None:
            n = sockets.fast_handled
            if n:
                sockets.fast_handled = 0
                self.counters["datagrams_rx"] += n
                self.counters["sends"] += n
                self.counters["fast_path"] += n     # how many of them (lispctl counters: is it used?)
            if sockets.fast_errors:
                self.counters["role_errors"] += sockets.fast_errors
                sockets.fast_errors = 0
            # it logs nothing: off while every datagram is logged (debug)
            sockets.fast = None if log.isEnabledFor(logging.DEBUG) else self._fast
        self._reschedule()

    def _received_on_data_port(self, data: bytes, src: tuple[str, int], dst: str | None) -> None:
        if dst is None:
            return
        self._received(data, Endpoint(ipaddress.ip_address(src[0]), src[1]),
                       Endpoint(ipaddress.ip_address(dst), DATA_PORT))
        self._reschedule()

    def _received(self, data: bytes, src: Endpoint, dst: Endpoint) -> None:
        """A datagram to the roles registered for its type, without
        re-reading deadlines (the sockets call _reschedule after each batch).
        The per-datagram path of a busy Map-Server: keep it free of work that
        is not needed."""
        counters = self.counters
        counters["datagrams_rx"] += 1
        debug = log.isEnabledFor(logging.DEBUG)
        if debug:
            log.debug("rx %d bytes %s:%d -> %s:%d: %s", len(data), src.addr, src.port,
                      dst.addr, dst.port, data[:64].hex())
        now = self.loop.time() if self.loop is not None else time.monotonic()
        roles = self.by_type[data[0] >> 4] if data else None
        if not roles:
            counters["unhandled" if data else "malformed"] += 1
            self._peer_event("daemon", "unhandled" if data else "malformed", src,
                             f"{'no role takes' if data else 'empty'} datagram"
                             f"{' of type ' + str(data[0] >> 4) if data else ''} from {src.addr}:{src.port}",
                             now, debug)
            return
        malformed = False
        for name, role in roles:
            try:
                effects = role.handle(data, src, dst, now)
            except MalformedMessage as exc:
                if not malformed:
                    self._peer_event(name, "malformed", src,
                                     f"malformed datagram from {src.addr}:{src.port}: {exc}", now, debug)
                malformed = True
                continue
            except Exception:
                counters["role_errors"] += 1
                log.exception("%s: error handling datagram from %s:%d", name, src.addr, src.port)
                continue
            if effects:
                self.apply(name, effects)
        if malformed:
            counters["malformed"] += 1

    def _misses_ready(self) -> None:
        started = time.monotonic()
        try:
            events = list(self.datapath.poll_misses())
        except Exception:
            self.counters["miss_read_errors"] += 1
            log.exception("reading miss events failed")
            return
        # One deadline recomputation per batch, not per event: under a miss
        # storm the ring holds hundreds of events per wake-up.
        for ev in events:
            self.miss(ev, reschedule=False)
        if events:
            self._reschedule()
        took = time.monotonic() - started
        if took > MISS_BATCH_BUDGET_S and self._miss_fd is not None:
            self.counters["miss_batches_paused"] += 1
            self._live_loop().remove_reader(self._miss_fd)
            self._live_loop().call_later(took, self._resume_misses)

    def _queued_send_failed(self) -> None:
        """A reply queued during a batch of datagrams was refused when the
        batch was sent (the socket logged it)."""
        self.counters["send_errors"] += 1

    def _live_loop(self) -> asyncio.AbstractEventLoop:
        """The loop, for the callbacks that run only while started."""
        assert self.loop is not None
        return self.loop

    def _resume_misses(self) -> None:
        if self._miss_fd is not None and self.loop is not None:
            self.loop.add_reader(self._miss_fd, self._misses_ready)

    def _poll_usage(self) -> None:
        """Tell the ITR which installed mappings carried traffic since the last
        poll (per-mapping packet counters), so it refreshes only used entries."""
        self._usage_timer = self._live_loop().call_later(USAGE_POLL_S, self._poll_usage)
        used = []
        every = getattr(self.datapath, "all_mapping_counters", None)
        counts = every() if every is not None else None     # one read of the flow cache
        for eid in list(self.cache):
            try:
                packets, _ = counts[eid] if counts is not None else self.datapath.mapping_counters(eid)
            except Exception:
                continue                     # e.g. removed meanwhile
            if packets != self._usage.get(eid, 0):
                used.append(eid)
            self._usage[eid] = packets
        for eid in [e for e in self._usage if e not in self.cache]:
            del self._usage[eid]
        if not used:
            return
        now = self.now()
        for name, role in self.roles:
            on_used = getattr(role, "on_used", None)
            if on_used is not None:
                self._guarded(name, "on_used", lambda: on_used(used, now))
        self._reschedule()

    def miss(self, event: MissEvent, reschedule: bool = True) -> None:
        self.counters["misses"] += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("miss %s from %s", event.eid, event.source)
        if self.held is not None and event.packet:
            self.held.on_miss(event)         # first: a role may install the mapping right away
            self._held_counters()
        now = self.now()
        for name, role in self.roles:
            on_miss = getattr(role, "on_miss", None)
            if on_miss is None:
                continue
            self._guarded(name, "miss", lambda: on_miss(event, now))
        if reschedule:
            self._reschedule()

    def _tick(self) -> None:
        self._timer = None
        now = self._last_tick = self.now()
        for name, role in self.roles:
            deadline = self._deadline(name, role)
            if deadline is not None and deadline <= now:
                self.counters["ticks"] += 1
                self._guarded(name, "tick", lambda: role.tick(now))
        self._reschedule()

    def _guarded(self, name: str, what: str, call) -> None:
        try:
            effects = call()
        except Exception:
            self.counters["role_errors"] += 1
            log.exception("%s: error in %s", name, what)
            return
        self.apply(name, effects)

    # -- timers ----------------------------------------------------------
    def _deadline(self, name: str, role: Role) -> float | None:
        try:
            return role.next_deadline()
        except Exception:
            self.counters["role_errors"] += 1
            log.exception("%s: error in next_deadline", name)
            return None

    def _reschedule(self) -> None:
        if self.loop is None or self.sockets is None:
            return
        earliest = None
        for name, role in self.roles:
            d = self._deadline(name, role)
            if d is not None and (earliest is None or d < earliest):
                earliest = d
        if earliest is None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            return
        # A role whose deadline stays in the past after its tick would spin
        # the loop; 1 ms after the previous tick bounds that without delaying
        # real deadlines noticeably.
        at = max(earliest, self._last_tick + 0.001)
        if self._timer is not None:
            # A timer that fires no later than needed stays: when it fires early
            # _tick finds nothing due and re-arms. Moving it on every datagram
            # (a refreshed registration moves the MS deadline each time) would
            # cost a cancel and a heap push per packet.
            if self._timer_at <= at:
                return
            self._timer.cancel()
        self._timer = self.loop.call_at(at, self._tick)
        self._timer_at = at

    # -- effects ---------------------------------------------------------
    def apply(self, role: str, effects) -> None:
        for eff in effects or ():
            if type(eff) is Send and eff.src is None and self.sockets is not None \
                    and not log.isEnabledFor(logging.DEBUG):
                # the common reply: no choice of source, nothing to log
                self.counters["sends"] += 1
                try:
                    sent = self.sockets.send(eff.payload, eff.dst)
                except Exception:
                    self.counters["effect_errors"] += 1
                    log.exception("%s: carrying out %r failed", role, type(eff).__name__)
                    continue
                if not sent:
                    self.counters["send_errors"] += 1
                continue
            try:
                self._apply_one(role, eff)
            except DatapathError as exc:
                # e.g. a full map: one line, no traceback (it can repeat per entry)
                self.counters["effect_errors"] += 1
                self.counters["datapath_errors"] += 1
                log.warning("%s: %s %s failed: %s", role, type(eff).__name__, getattr(eff, "eid", ""), exc)
            except Exception:
                self.counters["effect_errors"] += 1
                log.exception("%s: carrying out %r failed", role, type(eff).__name__)

    def _apply_one(self, role: str, eff) -> None:
        if isinstance(eff, Send):
            self.counters["sends"] += 1
            if log.isEnabledFor(logging.DEBUG):
                log.debug("tx %d bytes -> %s:%d from %s: %s", len(eff.payload), eff.dst.addr,
                          eff.dst.port, eff.src, eff.payload[:64].hex())
            if self.sockets is not None and not self.sockets.send(eff.payload, eff.dst, eff.src):
                self.counters["send_errors"] += 1
        elif isinstance(eff, InstallMapping):
            self.counters["installs"] += 1
            if self.datapath is not None:
                self.datapath.set_mapping(eff.eid, list(eff.rlocs), eff.action)
            if self.held is not None and len(self.held.queue):
                self.held.on_install(eff.eid, tuple(eff.rlocs), MapAction(eff.action))
                self._held_counters()
            self.cache[eff.eid] = CacheEntry(eff.eid, tuple(eff.rlocs), MapAction(eff.action),
                                             eff.ttl_s, self.now(), role)
        elif isinstance(eff, RemoveMapping):
            self.counters["removals"] += 1
            if self.datapath is not None:
                self.datapath.delete_mapping(eff.eid)
            self.cache.pop(eff.eid, None)
        elif isinstance(eff, Announce):
            self.counters["announcements" if eff.up else "withdrawals"] += 1
            if self.announcer is not None:
                self.announcer.set(eff.prefixes, eff.up)
        elif isinstance(eff, Log):
            if eff.kind and not proto_log.isEnabledFor(logging.DEBUG):
                line = self.logsum.offer(role, eff.kind, eff.peer, eff.text, self.now())
                if line is not None:
                    proto_log.info("%s", line)
                    self._arm_logsum()
                return
            proto_log.info("%s: %s", role, eff.text)
            if eff.detail:
                proto_log.debug("%s: %s", role, eff.detail)
        else:
            raise TypeError(f"unknown effect {eff!r}")

    # -- log summaries -----------------------------------------------------
    def _peer_event(self, role: str, kind: str, src: Endpoint, text: str, now: float, debug: bool) -> None:
        """An event a peer can repeat at will: at debug one line each, above
        debug the first of each 10 s window and then a summary."""
        if debug:
            log.debug("%s: %s", role, text)
            return
        line = self.logsum.offer(role, kind, src.addr, text, now)
        if line is not None:
            proto_log.info("%s", line)       # where its summary goes too
            self._arm_logsum()

    def _arm_logsum(self) -> None:
        if self._logsum_timer is None and self.loop is not None:
            due = self.logsum.due()
            if due is not None:
                self._logsum_timer = self.loop.call_at(due, self._flush_logsum)

    def _flush_logsum(self) -> None:
        self._logsum_timer = None
        for line in self.logsum.flush(self.now()):
            proto_log.info("%s", line)
        self._arm_logsum()

    # -- views for the API -------------------------------------------------
    def role_snapshots(self) -> dict[str, dict]:
        return {name: self.role_snapshot(name, role) for name, role in self.roles}

    def role_snapshot(self, name: str, role: Role) -> dict:
        try:
            return role.snapshot()
        except Exception:
            self.counters["role_errors"] += 1
            log.exception("%s: error in snapshot", name)
            return {"error": "snapshot failed"}

    def map_cache(self) -> list[dict]:
        now = self.now()
        return [e.to_json(now) for e in sorted(self.cache.values(), key=lambda e: eid_sort_key(e.eid))]

    def socket_counters(self) -> dict:
        sockets = self.sockets
        s = sockets.stats if sockets else None
        if sockets is None or not s:
            return {}
        drops = sockets.queue_drops()
        return {"rx": s.rx, "tx": s.tx, "send_errors": s.send_errors,
                **{f"queue_drops_{k}": v for k, v in drops.items()},
                "request_sockets": len(sockets.request_sockets)}
