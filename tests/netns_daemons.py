"""`lispctl up` daemons inside a test's own namespaces: started one after
another (each waits for its `ready` line, so a failed start shows its log),
stopped newest first, every one the test started and nothing else."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pyroute2 import NetNS, netns

from lispctl.lab.nsexec import preexec


class Daemons:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.procs: list[tuple[subprocess.Popen, object]] = []

    def up(self, ns: str, cfg: Path, name: str) -> subprocess.Popen:
        log = open(self.run_dir / f"{name}.log", "w")
        p = subprocess.Popen([sys.executable, "-m", "lispctl.cli", "up", "-c", str(cfg),
                              "--run-dir", str(self.run_dir)], preexec_fn=preexec(ns),
                             stdout=subprocess.PIPE, stderr=log, text=True)
        self.procs.append((p, log))
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "ready", (self.run_dir / f"{name}.log").read_text()
        return p

    def stop(self) -> None:
        for p, log in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
                p.wait(20)
            if p.stdout is not None:
                p.stdout.close()
            log.close()         # type: ignore[attr-defined]
        self.procs.clear()


def router_and_host(router: str, host: str) -> None:
    """router: wan0 (192.0.2.1 an xTR's RLOC, 192.0.2.10 an MS/MR), lan0
    10.1.0.1 -> host h0 10.1.0.2 (default route via the router)."""
    netns.create(router)
    netns.create(host)
    with NetNS(router) as r:
        r.link("set", index=r.link_lookup(ifname="lo")[0], state="up")
        for ours, peer in (("wan0", "w1"), ("lan0", "h0")):
            r.link("add", ifname=ours, kind="veth", peer={"ifname": peer, "net_ns_fd": host})
            r.link("set", index=r.link_lookup(ifname=ours)[0], state="up")
        wan, lan = r.link_lookup(ifname="wan0")[0], r.link_lookup(ifname="lan0")[0]
        r.addr("add", index=wan, address="192.0.2.1", prefixlen=24)
        r.addr("add", index=wan, address="192.0.2.10", prefixlen=24)
        r.addr("add", index=lan, address="10.1.0.1", prefixlen=24)
    with NetNS(host) as h:
        for name in ("w1", "h0"):
            h.link("set", index=h.link_lookup(ifname=name)[0], state="up")
        h.addr("add", index=h.link_lookup(ifname="h0")[0], address="10.1.0.2", prefixlen=24)
        h.route("add", dst="0.0.0.0/0", gateway="10.1.0.1")
