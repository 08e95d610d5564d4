"""`lispctl up` daemons inside a test's own namespaces (or on loopback):
started one after another (each waits for its `ready` line, so a failed
start shows its log), stopped newest first, every one the test started and
nothing else.

Also `daemon_run`, which makes a test's run directory and namespaces and
removes exactly those afterwards, and the router+host topology several
modules share, with the TOML of the xTR and the MS/MR it carries."""
from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from pyroute2 import NetNS, netns

from lispctl.lab.nsexec import preexec


class Daemons:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.procs: list[tuple[subprocess.Popen, object]] = []

    def up(self, ns: str | None, cfg: Path, name: str, *args: str) -> subprocess.Popen:
        """`lispctl up -c cfg *args` in namespace `ns` (None: this one); its log is {name}.log."""
        log = open(self.run_dir / f"{name}.log", "w")
        p = subprocess.Popen([sys.executable, "-m", "lispctl.cli", "up", "-c", str(cfg),
                              "--run-dir", str(self.run_dir), *args],
                             preexec_fn=preexec(ns) if ns else None,
                             stdout=subprocess.PIPE, stderr=log, text=True)
        self.procs.append((p, log))
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "ready", (self.run_dir / f"{name}.log").read_text()
        return p

    def start(self, ns: str | None, name: str, toml: str, *args: str) -> subprocess.Popen:
        """up() with the configuration `toml`, written to the run directory as {name}.toml."""
        cfg = self.run_dir / f"{name}.toml"
        cfg.write_text(toml)
        return self.up(ns, cfg, name, *args)

    def control_port(self) -> int:
        """The port of the first control address of the run directory's
        daemon (one started with --control-port 0)."""
        out = subprocess.run([sys.executable, "-m", "lispctl.cli", "status", "--json",
                              "--run-dir", str(self.run_dir)], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stdout + out.stderr
        return int(json.loads(out.stdout)["control"][0].rsplit(":", 1)[1])

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


# The daemons of router_and_host, both in the router: an xTR at 192.0.2.1 for
# 10.1.0.0/16 (EIDs on lan0) and its MS/MR at 192.0.2.10, key ID 1 "k".
# More tables (e.g. [itr], [metrics]) go after them.
MS_TOML = """
instance = "{tag}-ms"
roles = ["ms", "mr"]
control-addresses = ["192.0.2.10"]
[[site]]
name = "a"
keys = {{ 1 = "k" }}
[[site.eid-prefix]]
prefix = "10.1.0.0/16"
"""
XTR_TOML = """
instance = "{tag}-x"
roles = ["xtr"]
control-addresses = ["192.0.2.1"]
[interfaces]
eid-facing = ["lan0"]
rloc-facing = ["wan0"]
[[database]]
eid-prefix = "10.1.0.0/16"
[[database.locator]]
interface = "wan0"
family = "ipv4"
[[map-server]]
address = "192.0.2.10"
key-id = 1
key = "k"
[[map-resolver]]
address = "192.0.2.10"
"""
MISS_DROP = """[itr]
miss-action = "drop"
"""


def ms_toml(tag: str, *tables: str) -> str:
    return MS_TOML.format(tag=tag) + "".join(tables)


def xtr_toml(tag: str, *tables: str) -> str:
    return XTR_TOML.format(tag=tag) + "".join(tables)


@contextlib.contextmanager
def daemon_run(tag: str, namespaces: Sequence[str] = (),
               topology: Callable[[], None] | None = None) -> Iterator[Daemons]:
    """Daemons in a fresh run directory, after topology() has built
    `namespaces`; afterwards the daemons stop, those namespaces (in the order
    given) and the run directory go, whatever failed on the way."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"lispctl-{tag}-"))
    daemons = Daemons(run_dir)
    try:
        if topology is not None:
            topology()
        yield daemons
    finally:
        daemons.stop()
        for ns in namespaces:
            if ns in netns.listnetns():
                netns.remove(ns)
        shutil.rmtree(run_dir, ignore_errors=True)


def router_and_host_daemons(tag: str) -> contextlib.AbstractContextManager[Daemons]:
    """daemon_run over router_and_host(f"{tag}r", f"{tag}h")."""
    router, host = f"{tag}r", f"{tag}h"
    return daemon_run(tag, (host, router), lambda: router_and_host(router, host))
