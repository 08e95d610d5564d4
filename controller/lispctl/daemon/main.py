"""The life of one daemon process: lock, build, serve, tear down.

`lispctl up` runs in the foreground (systemd Type=simple and the lab runner
both want that). When the API socket answers and the control sockets are
bound it prints a line containing only `ready` on stdout; SIGTERM, SIGINT or
the API `stop` command end it, after which programs are detached, routes
removed, sockets closed and the pidfile and API socket deleted.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from typing import Callable, TextIO

from lispctl.api.protocol import ApiError

from .api_server import ApiServer
from .device import Device
from .ifwatch import LocatorWatch
from .mobile import MobileNodeWatch
from .rundir import InstancePaths, PidLock
from .runtime import Runtime

log = logging.getLogger("lispctl.daemon")

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper()), format=LOG_FORMAT,
                        stream=sys.stderr, force=True)


def serve(paths: InstancePaths, build: Callable[[], Device], *,
          ready_out: TextIO | None = None) -> int:
    """Run a device until stopped. Raises AlreadyRunning before building
    anything when the instance is taken; returns the exit status otherwise."""
    lock = PidLock(paths)
    lock.acquire()
    try:
        device = build()
        try:
            asyncio.run(_serve(paths, device, ready_out or sys.stdout))
        finally:
            failed = device.teardown()
        return 1 if failed else 0
    finally:
        lock.release()
        log.info("stopped")


async def _serve(paths: InstancePaths, device: Device, ready_out: TextIO) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    runtime = Runtime(device.roles, datapath=device.datapath,
                      control_port=device.control_port, binds=device.binds)
    runtime.announcer = device.announcer
    runtime.start()
    mobile = MobileNodeWatch.for_device(runtime, device)
    watch = mobile or LocatorWatch.for_device(runtime, device)
    if watch is not None and mobile is None:
        watch.start(loop)
    api = ApiServer(paths.socket, _handlers(paths, device, runtime, lambda: loop.call_soon(stop.set)))
    try:
        if mobile is not None:
            await mobile.setup(loop)     # EID device, uplinks, then the same watcher
        await api.start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, _on_signal, sig, stop)
        log.info("instance %s serving: roles %s, control %s, API %s, data plane %s",
                 device.instance, ",".join(n for n, _ in device.roles),
                 " ".join(runtime.sockets.describe()), paths.socket,
                 "attached" if device.datapath is not None else "none")
        print("ready", file=ready_out, flush=True)
        await stop.wait()
        log.info("stopping")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await api.close()
        if mobile is not None:
            await mobile.restore()
        elif watch is not None:
            watch.close()
        runtime.close()


def _on_signal(sig: int, stop: asyncio.Event) -> None:
    log.info("%s received", signal.Signals(sig).name)
    stop.set()


def _handlers(paths: InstancePaths, device: Device, rt: Runtime, request_stop) -> dict:
    def collect(key: str) -> list:
        out = []
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
            **device.info,
            "state": rt.role_snapshots(),
        }

    def counters(_req):
        out = {"daemon": {**dict(sorted(rt.counters.items())),
                          **{f"socket_{k}": v for k, v in rt.socket_counters().items()}},
               "roles": {}}
        for name, snap in rt.role_snapshots().items():
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

    return {
        "status": status,
        "map-cache": lambda _r: rt.map_cache(),
        "database": lambda _r: collect("database"),
        "sites": lambda _r: collect("sites"),
        "counters": counters,
        "stop": stop,
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
