"""Map-Register worker processes of a Map-Server (`[ms] workers = N`, N > 1).

One process serves Map-Registers on one core; Python's per-datagram socket
path bounds it (docs/daemon.md, "A Map-Server on several cores"). With N
workers the daemon (the "main" process):

- binds N more sockets into each control address's SO_REUSEPORT group
  before it forks (daemon/udp.py): the group's steering program sends a
  Map-Register to the worker socket a hash of its first EID record's
  EID picks, so every message of one registration, replays included,
  reaches the same worker; everything else comes to the main process.
  The main process keeps its copy of every worker socket open and never
  reads it: the group's order (its socket indexes) never changes, and a
  worker that dies finds its queue waiting when it is forked again.
- forks worker k with its sockets, one end of a unix stream socket and its
  journal. The worker runs a MapServerRole of its own (the same sites):
  authenticates, updates, answers with the Map-Notify, and sends the main
  process, before the Map-Notifies of a batch leave, only changes
  ("frames": pickles, length-prefixed): a registration added, its
  locators, ETR, flags or key changed, withdrawn or expired, and, when the
  main process's copy would otherwise come within half the registration
  timeout of its expiry, the registration again with its current expiry.
  A refresh that changes nothing crosses no process boundary. Counters
  when the main process asks (an API call) and every COUNTERS_EVERY_S
  while it works.
- keeps the union in its own MapServerRole (MapServerRole.merge), which
  answers Map-Requests, LISP-SEC, publish/subscribe and the API.

Worker restarts. The main process sees a worker die as end of file on its
stream, reaps it, counts it (`ms_worker_restarts`) and forks it again (at
once; after a crash within RESPAWN_QUICK_S of its start, with a back-off up
to RESPAWN_MAX_S). What the dead worker had reported stays in the union
until the expiry it last reported, which is never later than the worker's
own and, while the worker lived, at least half the registration timeout
ahead: the union neither drops a registration when its worker dies nor
keeps it past its timeout. A replay must stay refused across the restart:
the worker writes the fingerprint of every MAC whose replay it refuses (a
superseded MAC, and the latest of a registrant that varies its nonce), and
that of each registration's first message, marked, into its journal, a ring in memory the main process created and shares (a
write, not a message: nothing is lost when the worker is killed between
accepting a message and sending anything); the next worker of that shard
refuses those (MapServerRole.restore). A reload (new sites) replaces every
worker the same way.
"""
from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import mmap
import os
import pickle
import signal
import socket
import struct
import time
from collections import Counter
from typing import Any

from .runtime import Runtime

log = logging.getLogger("lispctl.daemon.msworkers")

_FRAME = struct.Struct("=I")
_U64 = struct.Struct("=Q")
COUNTERS_EVERY_S = 1.0
# Fingerprints (8 bytes) a shard's journal keeps, oldest overwritten: 8 MiB
# per worker, backed only as written. A registrant that varies its nonce
# adds one per refresh: 100,000 such sites re-registering every minute fill
# two workers' rings in about 20 minutes, longer than the per-site lists of
# superseded MACs remember with that many sites (docs/ms-security.md).
JOURNAL_ENTRIES = 1 << 20
READY_TIMEOUT_S = 300.0            # building the sites of a large config takes a while
RESPAWN_QUICK_S = 10.0
RESPAWN_MAX_S = 30.0
_PR_SET_PDEATHSIG = 1


class Journal:
    """A ring of 64-bit MAC fingerprints in a shared anonymous mapping
    created by the main process: written by one worker, read by the next
    one of the same shard. The count is written after the entry, so a
    worker killed mid-write leaves at most that entry unread."""

    def __init__(self, entries: int = JOURNAL_ENTRIES) -> None:
        self.entries = entries
        self.map = mmap.mmap(-1, 8 * (entries + 1))       # MAP_SHARED: forked workers write here
        self.n = 0

    def sync(self) -> None:
        """In a new worker: carry on where the previous one stopped."""
        self.n = _U64.unpack_from(self.map, 0)[0]

    def add(self, fp: int) -> None:
        n = self.n
        _U64.pack_into(self.map, 8 + 8 * (n % self.entries), fp)
        self.n = n + 1
        _U64.pack_into(self.map, 0, n + 1)

    def fingerprints(self) -> list[int]:
        n = min(_U64.unpack_from(self.map, 0)[0], self.entries)
        return list(struct.unpack_from(f"={n}Q", self.map, 8)) if n else []

    def close(self) -> None:
        self.map.close()


def _send_frame(conn: socket.socket, kind: str, payload: Any) -> None:
    data = pickle.dumps((kind, payload), pickle.HIGHEST_PROTOCOL)
    conn.sendall(_FRAME.pack(len(data)) + data)


# -- the worker process ------------------------------------------------------------
class _WorkerRuntime(Runtime):
    """The Runtime of a worker: the role's changes go to the main process
    after each batch of datagrams, before the batch's Map-Notifies leave (a
    worker killed in between has told the main process everything it
    answered for: the stream keeps what was written), and after each tick."""
    conn: socket.socket

    def start(self) -> None:
        super().start()
        assert self.sockets is not None
        self.sockets.before_replies = self.report

    def report(self) -> None:
        role = self.roles[0][1]
        report = getattr(role, "report", None)
        if report:
            role.report = []          # type: ignore[attr-defined]
            _send_frame(self.conn, "changes", report)

    def _reschedule(self) -> None:
        self.report()                 # after a tick (after a batch: nothing left)
        super()._reschedule()


def _release_inherited(keep: set[int]) -> None:
    """Let go of every file the worker inherited but does not use: the
    main process's sockets (an API client or a metrics scrape would wait
    for an end of file only the worker's exit gives), its epoll instance,
    the pidfile's lock. Each is replaced by /dev/null rather than closed,
    so no number is reused while an object of the main process (never run
    here, never freed) still believes it owns it."""
    null = os.open(os.devnull, os.O_RDWR)
    try:
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            if fd in keep or fd == null or fd <= 2:
                continue
            try:
                os.fstat(fd)                     # (the listing's own, closed by now)
            except OSError:
                continue
            os.dup2(null, fd, inheritable=False)
    finally:
        os.close(null)


def worker_role(cfg: Any) -> Any:
    """The MapServerRole a worker runs, built in the main process before it
    forks: the worker starts with it as it is, without touching (and so
    copying, reference counts being writes) the configuration's objects."""
    from lispctl.roles.ms import MapServerRole
    from lispctl.wire import MapRegister
    role = MapServerRole(cfg, answer_ecm=False)
    role.message_types = frozenset({MapRegister.TYPE})
    role.report = []
    return role


def _worker_process(k: int, role: Any, socks: list[socket.socket], conn: socket.socket, journal: Journal) -> None:
    """The body of a forked worker; never returns."""
    code = 1
    try:
        keep = {s.fileno() for s in socks} | {conn.fileno()}
        for h in logging.getLogger().handlers:
            stream = getattr(h, "stream", None)
            if stream is not None and hasattr(stream, "fileno"):
                try:
                    keep.add(stream.fileno())
                except (OSError, ValueError):
                    pass
        _release_inherited(keep)
        # The main process's loop set these up: its wakeup fd is the main
        # loop's pipe (shared after fork) and its handlers do nothing here.
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)          # the main process reloads, then replaces us
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):
            pass                      # the stream's end of file stops us too
        asyncio.run(_serve_worker(k, role, socks, conn, journal))
        code = 0
    except BaseException:             # noqa: BLE001 - a worker must end here, whatever happened
        log.exception("ms worker %d failed", k)
    finally:
        logging.shutdown()
        os._exit(code)


async def _serve_worker(k: int, role: Any, socks: list[socket.socket], conn: socket.socket,
                        journal: Journal) -> None:
    loop = asyncio.get_running_loop()
    journal.sync()
    role.journal = journal
    role.restore(journal.fingerprints())
    rt = _WorkerRuntime([(f"ms-worker{k}", role)], adopt=socks)     # its log lines say which worker
    rt.conn = conn
    rt.start()
    # What the main process built is frozen (MsWorkers._spawn): a collection
    # here walks only this worker's own objects, and leaves the pages it
    # shares with the main process unwritten (a full collection of the
    # inherited heap would copy all of it)
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
    gc.enable()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)

    def asked() -> None:
        """The main process asks for the counters now (an API call), or it
        is gone (end of file)."""
        try:
            data = conn.recv(64)
        except OSError:
            data = b""
        if not data:
            stop.set()
        else:
            counters()
    loop.add_reader(conn.fileno(), asked)
    _send_frame(conn, "ready", {"pid": os.getpid(), "restored": len(role.restored) + len(role.restored_first)})
    last: dict[int, tuple[int, int]] = {}
    seen = [-1]

    def counters(periodic: bool = False) -> None:
        moved = sum(role.counters.values()) + rt.counters["datagrams_rx"]
        if periodic and moved == seen[0]:
            return                               # idle: nothing new to say (and no scan of the sites)
        seen[0] = moved
        sites = {}
        for i, site in enumerate(role.sites):
            v = (site.registers, site.bad_auth)
            if v != (0, 0) and last.get(i) != v:
                last[i] = v
                sites[site.cfg.name] = v
        sock = rt.socket_counters()
        _send_frame(conn, "counters", {"role": dict(role.counters), "daemon": dict(rt.counters),
                                       "sockets": {n: sock.get(n, 0) for n in ("rx", "tx", "send_errors")},
                                       "sites": sites})

    async def tick_counters() -> None:
        while True:
            await asyncio.sleep(COUNTERS_EVERY_S)
            counters(periodic=True)
    task = loop.create_task(tick_counters())
    try:
        await stop.wait()
    finally:
        task.cancel()
        try:
            rt._reschedule()                     # the last changes
            counters()
        except OSError:
            pass                                 # the main process is gone
        rt.close()
        conn.close()
    log.debug("ms worker %d stopping", k)


# -- the main process ----------------------------------------------------------------
class _Worker:
    def __init__(self, k: int, pid: int, conn: socket.socket) -> None:
        self.k = k
        self.pid = pid
        self.conn = conn
        self.buf = bytearray()
        self.ready = False
        self.started = time.monotonic()
        self.stopping: str | None = None          # "reload" or "close": not a crash
        self.role: dict[str, int] = {}
        self.daemon: dict[str, int] = {}
        self.sockets: dict[str, int] = {}
        self.sites: dict[str, tuple[int, int]] = {}
        self.waiters: list[asyncio.Future[None]] = []   # API calls waiting for its next counters


class MsWorkers:
    """The main process's side: forks, supervises and listens to the workers."""

    def __init__(self, rt: Runtime, role: Any, cfg: Any, n: int) -> None:
        assert rt.sockets is not None and len(rt.sockets.worker_sockets) == n
        self.rt = rt
        self.role = role
        self.cfg = cfg
        self.n = n
        self.loop = asyncio.get_running_loop()
        self.journals = [Journal() for _ in range(n)]
        self.workers: list[_Worker | None] = [None] * n
        self.backoff = [0.0] * n
        self.closing = False
        self.counters: Counter[str] = Counter({"ms_workers": n, "ms_worker_restarts": 0,
                                               "ms_worker_changes_rx": 0})
        # what workers that ended had counted (a restart does not reset the totals)
        self.base_role: Counter[str] = Counter()
        self.base_daemon: Counter[str] = Counter()
        self.base_sites: dict[str, tuple[int, int]] = {}
        self._ready: asyncio.Future[None] | None = None
        self.template: Any = None             # the role each worker starts with (worker_role)
        role.remote_site_counters = self.site_counters

    # -- life cycle
    async def start(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Fork every worker; return when all of them serve."""
        self._ready = self.loop.create_future()
        self.template = worker_role(self.cfg)
        gc.collect()                  # start-up's garbage, before it is frozen (_spawn)
        for k in range(self.n):
            self._spawn(k)
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), timeout)
        finally:
            self._ready = None

    def _spawn(self, k: int) -> None:
        assert self.rt.sockets is not None
        socks = self.rt.sockets.worker_sockets[k]
        main_end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        for h in logging.getLogger().handlers:
            h.flush()
        # Out of the collector's reach in both processes from now on (as the
        # main process does after `ready` anyway): no collection in the
        # worker then writes to the pages it shares with the main process.
        gc.freeze()
        pid = os.fork()
        if pid == 0:                                  # the worker
            try:
                main_end.close()
                _worker_process(k, self.template, socks, worker_end, self.journals[k])
            finally:
                os._exit(1)
        worker_end.close()
        main_end.setblocking(False)
        self.workers[k] = _Worker(k, pid, main_end)
        self.loop.add_reader(main_end.fileno(), self._readable, k)
        log.info("ms worker %d started (pid %d)", k, pid)

    def restart(self, cfg: Any) -> None:
        """A reload: every worker is replaced by one with the new sites."""
        self.cfg = cfg
        self.template = worker_role(cfg)
        for w in self.workers:
            if w is not None and w.stopping is None:
                w.stopping = "reload"
                self._signal(w, signal.SIGTERM)

    def close(self, wait_s: float = 3.0) -> None:
        self.closing = True
        live = [w for w in self.workers if w is not None]
        for w in live:
            w.stopping = "close"
            self.loop.remove_reader(w.conn.fileno())
            self._signal(w, signal.SIGTERM)
        deadline = time.monotonic() + wait_s
        for w in live:
            while True:
                try:
                    pid, _ = os.waitpid(w.pid, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid:
                    break
                if time.monotonic() > deadline:
                    self._signal(w, signal.SIGKILL)
                    try:
                        os.waitpid(w.pid, 0)
                    except ChildProcessError:
                        pass
                    break
                time.sleep(0.01)
            w.conn.close()
        self.workers = [None] * self.n
        for j in self.journals:
            j.close()

    @staticmethod
    def _signal(w: _Worker, sig: int) -> None:
        try:
            os.kill(w.pid, sig)
        except ProcessLookupError:
            pass

    # -- frames from the workers
    def _readable(self, k: int) -> None:
        w = self.workers[k]
        if w is None:
            return
        try:
            data = w.conn.recv(1 << 20)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._gone(w)
            return
        buf = w.buf
        buf += data
        off = 0
        while len(buf) - off >= 4:
            (size,) = _FRAME.unpack_from(buf, off)
            if len(buf) - off - 4 < size:
                break
            try:
                kind, payload = pickle.loads(memoryview(buf)[off + 4:off + 4 + size])
            except Exception:
                # a worker that sends what it cannot have meant: replace it
                # (end of file follows; its registrations stay until they expire)
                log.exception("ms worker %d sent an unreadable frame: killing it", k)
                self._signal(w, signal.SIGKILL)
                self._gone(w)
                return
            off += 4 + size
            try:
                self._frame(w, kind, payload)
            except Exception:
                self.rt.counters["role_errors"] += 1
                log.exception("ms worker %d: handling its %s failed", k, kind)
        del buf[:off]

    def _frame(self, w: _Worker, kind: str, payload: Any) -> None:
        if kind == "changes":
            self.counters["ms_worker_changes_rx"] += len(payload)
            effects = self.role.merge(w.k, payload, self.rt.now())
            if effects:
                self.rt.apply("ms", effects)
            self.rt._reschedule()
        elif kind == "counters":
            w.role, w.daemon, w.sockets = payload["role"], payload["daemon"], payload["sockets"]
            w.sites.update(payload["sites"])
            for f in w.waiters:
                if not f.done():
                    f.set_result(None)
            w.waiters.clear()
        elif kind == "ready":
            w.ready = True
            log.info("ms worker %d serving (pid %d, %d MAC fingerprints of earlier workers refused)",
                     w.k, payload["pid"], payload["restored"])
            if self._ready is not None and not self._ready.done() \
                    and all(x is not None and x.ready for x in self.workers):
                self._ready.set_result(None)

    def _gone(self, w: _Worker) -> None:
        """End of file: the worker exited (or is about to): reap it, keep its
        counts, and fork its successor."""
        k = w.k
        self.loop.remove_reader(w.conn.fileno())
        w.conn.close()
        self._signal(w, signal.SIGKILL)              # closed its end but still there: a bug; never wait on it
        try:
            _, status = os.waitpid(w.pid, 0)
            how = f"status {os.waitstatus_to_exitcode(status)}"
        except ChildProcessError:
            how = "status unknown"
        self.base_role.update(w.role)
        self.base_daemon.update(w.daemon)
        self.base_daemon.update({f"socket_{n}": v for n, v in w.sockets.items()})
        for name, (r, b) in w.sites.items():
            r0, b0 = self.base_sites.get(name, (0, 0))
            self.base_sites[name] = (r0 + r, b0 + b)
        self.workers[k] = None
        if self.closing:
            return
        if self._ready is not None and not w.ready:
            if not self._ready.done():
                self._ready.set_exception(RuntimeError(f"ms worker {k} exited before serving ({how})"))
            return
        if w.stopping == "reload":
            self._spawn(k)
            return
        self.counters["ms_worker_restarts"] += 1
        quick = time.monotonic() - w.started < RESPAWN_QUICK_S
        self.backoff[k] = min(RESPAWN_MAX_S, max(1.0, 2 * self.backoff[k])) if quick else 0.0
        log.warning("ms worker %d (pid %d) ended (%s): its registrations stay in the union until they "
                    "expire; forking it again%s", k, w.pid, how,
                    f" in {self.backoff[k]:.0f} s" if self.backoff[k] else "")
        if self.backoff[k]:
            self.loop.call_later(self.backoff[k], self._respawn, k)
        else:
            self._spawn(k)

    def _respawn(self, k: int) -> None:
        if not self.closing and self.workers[k] is None:
            self._spawn(k)

    # -- views for the API
    async def refresh(self, timeout: float = 1.0) -> None:
        """Ask every serving worker for its counters now and wait for them
        (at most timeout: a worker busy beyond that is shown as it last
        reported, at most COUNTERS_EVERY_S ago)."""
        futs = []
        for w in self.workers:
            if w is None or not w.ready:
                continue
            try:
                w.conn.send(b"c")
            except OSError:
                continue
            f = self.loop.create_future()
            w.waiters.append(f)
            futs.append(f)
        if futs:
            await asyncio.wait(futs, timeout=timeout)

    def role_counters(self) -> Counter[str]:
        out = Counter(self.base_role)
        for w in self.workers:
            if w is not None:
                out.update(w.role)
        return out

    def daemon_counters(self) -> Counter[str]:
        out = Counter(self.base_daemon)
        for w in self.workers:
            if w is not None:
                out.update(w.daemon)
                out.update({f"socket_{n}": v for n, v in w.sockets.items()})
        out.update(self.counters)
        return out

    def site_counters(self, name: str) -> tuple[int, int]:
        r, b = self.base_sites.get(name, (0, 0))
        for w in self.workers:
            if w is not None and name in w.sites:
                r += w.sites[name][0]
                b += w.sites[name][1]
        return r, b

    def describe(self) -> list[dict]:
        return [{"worker": k, "pid": w.pid if w else None, "serving": bool(w and w.ready),
                 "map_register_rx": w.role.get("map_register_rx", 0) if w else 0}
                for k, w in enumerate(self.workers)]
