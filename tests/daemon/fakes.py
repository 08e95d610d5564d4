"""A scriptable role, a Runtime around a role in this process
(run_in_runtime), and a runner that starts a daemon around it in a subprocess.

The role reacts to the first word of each datagram, so a test drives the
daemon with plain UDP datagrams and reads its answers.
"""
from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from lispctl.mapping.types import EidPrefix, MapAction, Rloc
from lispctl.roles.base import Endpoint, InstallMapping, Log, RemoveMapping, Send
from lispctl.wire.errors import MalformedMessage


class FakeRole:
    def __init__(self) -> None:
        self.seen: list[tuple[bytes, Endpoint, Endpoint]] = []
        self.deadline: float | None = None
        self.timer_target: Endpoint | None = None
        self.ticks = 0
        self.misses: list = []

    def handle(self, data, src, dst, now):
        self.seen.append((data, src, dst))
        word, _, rest = data.partition(b" ")
        if word == b"echo":
            # Reply with what the daemon told us: where it came from and to which local address.
            body = json.dumps({"src": [str(src.addr), src.port], "dst": [str(dst.addr), dst.port],
                               "rest": rest.decode()}).encode()
            return [Log(f"echo to {src.addr}:{src.port}"), Send(body, src)]
        if word == b"boom":
            raise RuntimeError("role bug")
        if word == b"bad":
            raise MalformedMessage("not a LISP message", 0)
        if word == b"timer":
            self.deadline = now + float(rest)
            self.timer_target = src
            return []
        if word == b"install":
            eid = EidPrefix.parse(rest.decode())
            return [InstallMapping(eid, (Rloc(ipaddress.ip_address("192.0.2.1"), 1, 50),), ttl_s=60.0)]
        if word == b"negative":
            return [InstallMapping(EidPrefix.parse(rest.decode()), (), MapAction.DROP, ttl_s=30.0)]
        if word == b"remove":
            return [RemoveMapping(EidPrefix.parse(rest.decode()))]
        if word == b"sendfrom":
            # "sendfrom ADDR PORT": reply to the sender from a given source endpoint
            addr, port = rest.decode().split()
            return [Send(b"from " + addr.encode(), src, Endpoint(ipaddress.ip_address(addr), int(port)))]
        return []

    def tick(self, now):
        if self.deadline is None or now < self.deadline:
            return []
        self.deadline = None
        self.ticks += 1
        return [Send(b"tick %d" % self.ticks, self.timer_target)]

    def next_deadline(self):
        return self.deadline

    def on_miss(self, event, now):
        self.misses.append(event)
        return [Log(f"miss {event.eid}")]

    def snapshot(self):
        return {"seen": len(self.seen), "ticks": self.ticks,
                "counters": {"seen": len(self.seen)},
                "database": [{"eid": "10.1.0.0/16", "rlocs": [
                    {"address": "192.0.2.1", "priority": 1, "weight": 100, "reachable": True}]}],
                "sites": [{"site": "site-a", "eid": "10.1.0.0/16", "registered": False}]}


def run_in_runtime(body, roles, **kw):
    """body(rt) in a fresh event loop, with a started Runtime around `roles`
    ([(name, role)]; control port 0: any free port), closed after whatever
    body did."""
    import asyncio

    from lispctl.daemon.runtime import Runtime

    async def main():
        rt = Runtime(roles, control_port=0, **kw)
        rt.start()
        try:
            return await body(rt)
        finally:
            rt.close()
    return asyncio.run(main())


def main(argv: list[str]) -> int:
    """python -m tests.daemon.fakes RUN_DIR INSTANCE PORT: a daemon with one FakeRole on loopback."""
    from lispctl.daemon.device import Device
    from lispctl.daemon.main import serve, setup_logging
    from lispctl.daemon.rundir import AlreadyRunning, InstancePaths

    run_dir, instance, port = Path(argv[0]), argv[1], int(argv[2])
    setup_logging("debug")
    try:
        return serve(InstancePaths(run_dir, instance),
                     lambda: Device(instance, [("fake", FakeRole())], binds=["127.0.0.1", "::1"],
                                    control_port=port))
    except AlreadyRunning as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3


class DaemonProcess:
    """A fake-role daemon in a subprocess; stopped by its own pid."""

    def __init__(self, run_dir: Path, instance: str, port: int = 0) -> None:
        self.run_dir, self.instance = run_dir, instance
        root = Path(__file__).resolve().parents[2]
        self.log = run_dir / f"{instance}.log"
        self.out = open(self.log, "w")
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), str(run_dir), instance, str(port)],
            cwd=root, stdout=subprocess.PIPE, stderr=self.out, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        line = self.proc.stdout.readline()       # blocks until "ready" or EOF
        if line.strip() != "ready" or time.monotonic() > deadline:
            self.proc.wait(5)
            raise AssertionError(f"daemon not ready ({line!r}); log:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self.out.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
