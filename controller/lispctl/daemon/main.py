"""The life of one daemon process: lock, build, serve, tear down.

`lispctl up` runs in the foreground (systemd and the lab runner both want
that). When the API socket answers and the control sockets are bound it
prints a line containing only `ready` on stdout and, under systemd
(Type=notify), sends READY=1 (daemon/sdnotify.py); SIGTERM, SIGINT or
the API `stop` command end it, after which programs are detached, routes
removed, sockets closed and the pidfile and API socket deleted.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
import time
from collections import Counter
from typing import Callable, TextIO

from lispctl.api.protocol import ApiError

from .api_server import ApiServer
from .device import Device
from .ifwatch import LocatorWatch
from .mobile import MobileNodeWatch
from .reload import Reloader
from .rundir import InstancePaths, PidLock
from .runtime import Runtime
from .sdnotify import JournalFormatter, Notifier, under_journal

log = logging.getLogger("lispctl.daemon")

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper()), format=LOG_FORMAT,
                        stream=sys.stderr, force=True)
    if under_journal(sys.stderr):       # systemd: the journal stamps lines and wants priorities
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JournalFormatter())


def serve(paths: InstancePaths, build: Callable[[], Device], *,
          ready_out: TextIO | None = None) -> int:
    """Run a device until stopped. Raises AlreadyRunning before building
    anything when the instance is taken; returns the exit status otherwise."""
    lock = PidLock(paths)
    lock.acquire()
    notifier = Notifier.from_env()
    try:
        notifier.status("starting: loading the data plane")
        device = build()
        try:
            asyncio.run(_serve(paths, device, ready_out or sys.stdout, notifier))
        finally:
            failed = device.teardown()
        return 1 if failed else 0
    finally:
        lock.release()
        notifier.close()
        log.info("stopped")


async def _serve(paths: InstancePaths, device: Device, ready_out: TextIO,
                 notifier: Notifier | None = None) -> None:
    notifier = notifier or Notifier(None)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    workers = _ms_workers(device)
    runtime = Runtime(device.roles, datapath=device.datapath,
                      control_port=device.control_port, binds=device.binds, workers=workers)
    runtime.announcer = device.announcer
    runtime.start()
    pool = None
    if workers:
        from .msworkers import MsWorkers
        pool = runtime.ms_workers = MsWorkers(runtime, dict(device.roles)["ms"], device.config, workers)
    mobile = MobileNodeWatch.for_device(runtime, device)
    watch = mobile or LocatorWatch.for_device(runtime, device)
    if watch is not None and mobile is None:
        watch.start(loop)
    api = ApiServer(paths.socket, _handlers(paths, device, runtime, lambda: loop.call_soon(stop.set)))
    metrics = None
    try:
        if pool is not None:
            notifier.status(f"starting: {workers} Map-Server workers")
            await pool.start()
        if mobile is not None:
            await mobile.setup(loop)     # EID device, uplinks, then the same watcher
        await api.start()
        if device.metrics_listen:
            from .metrics import Metrics
            metrics = Metrics(device.instance, runtime, device.datapath)
            device.info["metrics"] = await metrics.start(device.metrics_listen)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, _on_signal, sig, stop)
        loop.add_signal_handler(signal.SIGHUP, _on_sighup, Reloader(device, runtime))
        log.info("instance %s serving: roles %s, control %s, API %s, data plane %s",
                 device.instance, ",".join(n for n, _ in device.roles),
                 " ".join(runtime.sockets.describe() if runtime.sockets is not None else ()), paths.socket,
                 "attached" if device.datapath is not None else "none")
        device.info["startup"] = startup_cost()
        print("ready", file=ready_out, flush=True)
        notifier.ready(f"serving: roles {','.join(n for n, _ in device.roles)}, API {paths.socket}")
        # after `ready`, not before: a full collection is ~25 ms of an xTR's
        # start (more with large site tables) that nothing before it needs
        loop.call_soon(_freeze_startup_objects)
        await stop.wait()
        notifier.stopping()
        log.info("stopping")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        await api.close()
        if pool is not None:
            pool.close()
        if metrics is not None:
            await metrics.close()
        if mobile is not None:
            await mobile.restore()
        elif watch is not None:
            watch.close()
        runtime.close()
        if device.bulk is not None:
            device.bulk.close()


def _ms_workers(device: Device) -> int:
    """Map-Register worker processes to fork ([ms] workers; 0 for one process)."""
    cfg = device.config
    if cfg is None or "ms" not in dict(device.roles):
        return 0
    n = cfg.ms.workers
    return n if n > 1 else 0


def startup_cost() -> dict:
    """What reaching `ready` cost: CPU seconds of this process and of the
    children it waited for (the BPF build child, when one ran), and seconds
    since the process started (`lispctl status` shows both; bench_daemon)."""
    t = os.times()
    try:
        with open("/proc/self/stat") as fh:
            started = int(fh.read().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
        wall = round(time.clock_gettime(time.CLOCK_BOOTTIME) - started, 2)
    except (OSError, ValueError, IndexError):
        wall = None
    return {"cpu_s": round(t.user + t.system + t.children_user + t.children_system, 3), "wall_s": wall}


def _freeze_startup_objects() -> None:
    """What start-up built (the configuration, site and prefix tables, the
    data plane's objects) lives as long as the daemon: move it out of the
    cyclic collector's scans (gc.freeze). A Map-Server with 100,000 sites
    holds millions of such objects, and every full collection, which the
    registrations arriving after start trigger, would walk them all.
    Young collections every 10,000 allocations instead of 700: fewer passes
    over the objects a burst of new registrations creates. Runs just after
    `ready`."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
    gc.enable()          # `lispctl up` runs start-up without it (commands/up.py)


def _on_signal(sig: int, stop: asyncio.Event) -> None:
    log.info("%s received", signal.Signals(sig).name)
    stop.set()


def _on_sighup(reloader: Reloader) -> None:
    log.info("SIGHUP received: reloading %s", reloader.device.config_path)
    try:
        reloader.reload()
    except ApiError as exc:
        log.error("reload refused: %s", exc)


def _handlers(paths: InstancePaths, device: Device, rt: Runtime, request_stop) -> dict:
    def collect(key: str) -> list:
        out: list = []
        for name, snap in rt.role_snapshots().items():
            items = snap.get(key) if isinstance(snap, dict) else None
            if isinstance(items, list):
                out.extend({"role": name, **i} if isinstance(i, dict) else i for i in items)
        return out

    def status(_req):
        return {
            "instance": device.instance, "pid": os.getpid(),
            "uptime_s": round(rt.now() - rt.started, 1),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(rt.started_wall)),
            "roles": [n for n, _ in device.roles],
            "control": rt.sockets.describe() if rt.sockets else [],
            "api": str(paths.socket),
            "datapath": device.datapath is not None,
            "map_cache_entries": len(rt.cache),
            "map_cache_tables": device.bulk.snapshot() if device.bulk is not None else [],
            **({"ms_workers": rt.ms_workers.describe()} if rt.ms_workers is not None else {}),
            **device.info,
            "state": rt.role_snapshots(),
        }

    def counters(_req):
        out = {"daemon": {**dict(sorted(rt.counters.items())),
                          **{f"socket_{k}": v for k, v in rt.socket_counters().items()}},
               "roles": {}}
        # each role's own counters: not its whole snapshot (a Map-Server's
        # lists every site and registration, 100,000s of them)
        pool = rt.ms_workers
        if pool is not None:          # the workers' counts added to this process's
            for k, v in pool.daemon_counters().items():
                out["daemon"][k] = out["daemon"].get(k, 0) + v
            out["daemon"] = dict(sorted(out["daemon"].items()))
        for name, role in rt.roles:
            c = getattr(role, "counters", None)
            if hasattr(c, "snapshot"):
                out["roles"][name] = c.snapshot()
                if pool is not None and name == "ms":
                    total = Counter(c)
                    total.update(pool.role_counters())
                    out["roles"][name] = dict(sorted(total.items()))
            else:
                snap = rt.role_snapshot(name, role)
                if isinstance(snap, dict) and isinstance(snap.get("counters"), dict):
                    out["roles"][name] = snap["counters"]
        if device.datapath is not None:
            try:
                out["datapath"] = _jsonable(device.datapath.counters())
            except Exception as exc:
                log.exception("reading data-plane counters failed")
                raise ApiError(f"reading data-plane counters failed: {exc}") from None
        return out

    def stop(req):
        # keep_datapath: a planned restart; the next `up` adopts programs and maps
        device.keep_datapath = bool(req.get("keep_datapath")) and device.datapath is not None
        request_stop()
        return {"stopping": True, "pid": os.getpid(), "keep_datapath": device.keep_datapath}

    def tables():
        if device.bulk is None:
            raise ApiError("this device has no data plane map-cache")
        return device.bulk

    def load_table(req):
        path, name, ttl = req.get("path"), req.get("name"), req.get("ttl")
        if not isinstance(path, str) or not path:
            raise ApiError('map-cache-load needs "path" (a file the daemon can read)')
        if name is not None and (not isinstance(name, str) or not name or len(name) > 128):
            raise ApiError('"name" must be a non-empty string')
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, (int, float))):
            raise ApiError('"ttl" must be a number of seconds')
        return tables().load_async(path, name, ttl)

    def unload_table(req):
        if not isinstance(req.get("name"), str):
            raise ApiError('map-cache-unload needs "name"')
        return tables().unload(req["name"])

    def fresh(fn):
        """With Map-Server workers: their counters as of now, not of their
        last periodic report."""
        if rt.ms_workers is None:
            return fn

        async def call(req):
            await rt.ms_workers.refresh()
            return fn(req)
        return call

    return {
        "map-cache-load": load_table,
        "map-cache-unload": unload_table,
        "status": fresh(status),
        "map-cache": lambda _r: rt.map_cache(),
        "database": lambda _r: collect("database"),
        "sites": fresh(lambda _r: collect("sites")),
        "counters": fresh(counters),
        "stop": stop,
        "reload": lambda _r: Reloader(device, rt).reload(),
    }


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    if hasattr(value, "_asdict"):
        return _jsonable(value._asdict())
    if hasattr(value, "__dataclass_fields__"):
        return {f: _jsonable(getattr(value, f)) for f in value.__dataclass_fields__}
    return str(value)
