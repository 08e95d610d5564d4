"""Build a topology out of network namespaces and veth pairs, and take it down again.

Every namespace of a run is called PREFIX-NODE, PREFIX = "lab<pid>-<n>", so
parallel runs and leftovers never collide. Veth pairs are created directly
inside the run's namespaces (peer moved at creation time), so no interface of
a lab ever exists in the root namespace and interface names inside a node can
stay short and meaningful. Everything created is written to a state file the
moment it exists; teardown removes exactly what is recorded there (processes
by PID + start time, pinned BPF dirs, links, namespaces), also after an
exception, Ctrl-C, or from another process (`python -m lispctl.lab --down PREFIX`).
"""
from __future__ import annotations

import ipaddress
import itertools
import json
import os
import shutil
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from pyroute2 import IPRoute
from pyroute2 import netns as _netns

from . import nsexec, procs
from .topology import Process, Topology

STATE_DIR = Path("/run/lispctl-lab")
BPF_PIN_ROOT = Path("/sys/fs/bpf/lispctl")
_counter = itertools.count()
IFA_F_TENTATIVE = 0x40


class LabError(RuntimeError):
    pass


def new_prefix() -> str:
    return f"lab{os.getpid()}-{next(_counter)}"


@dataclass
class State:
    prefix: str
    topology: str
    namespaces: list[str] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)          # (ns, ifname) of the end we created
    processes: list[dict[str, Any]] = field(default_factory=list)       # node, name, pid, started
    pins: list[str] = field(default_factory=list)                       # bpffs dirs a process of ours may leave

    @property
    def path(self) -> Path:
        return STATE_DIR / self.prefix / "state.json"

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        tmp.replace(self.path)

    @classmethod
    def load(cls, prefix: str) -> "State":
        p = STATE_DIR / prefix / "state.json"
        if not p.exists():
            raise LabError(f"no record of a lab {prefix!r} ({p} missing); nothing is removed without one")
        d = json.loads(p.read_text())
        d["links"] = [tuple(x) for x in d["links"]]
        return cls(**d)


class Lab:
    """A running instance of a topology. Use as a context manager:

        with Lab(load("dataplane")) as lab:
            lab.run("hostA", ["ping", "-c1", "10.2.0.2"], check=True)
    """

    def __init__(self, topology: Topology, *, prefix: str | None = None, keep: bool = False) -> None:
        self.topo = topology
        self.prefix = prefix or new_prefix()
        self.keep = keep
        self.state = State(self.prefix, topology.name)
        self.procs: dict[tuple[str, str], procs.LabProcess] = {}
        self._built = False

    # names ---------------------------------------------------------------
    def ns(self, node: str) -> str:
        if node not in self.topo.nodes:
            raise KeyError(f"no node {node!r} in topology {self.topo.name}")
        return f"{self.prefix}-{node}"

    def instance(self, node: str) -> str:
        """Per-run name for the node's pinned BPF objects."""
        return self.ns(node)

    @property
    def rundir(self) -> Path:
        return STATE_DIR / self.prefix

    def addr(self, node: str, version: int = 4, ifname: str | None = None) -> str:
        return self.topo.address_of(node, ifname, version)

    # lifecycle -------------------------------------------------------------
    def __enter__(self) -> "Lab":
        try:
            self.build()
        except BaseException:
            self.teardown()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.keep:
            self.teardown()

    def build(self) -> None:
        existing = set(_netns.listnetns())
        for node in self.topo.nodes:
            if self.ns(node) in existing:
                raise LabError(f"namespace {self.ns(node)} already exists; refusing to reuse it")
        self.state.save()
        for node, spec in self.topo.nodes.items():
            name = self.ns(node)
            _netns.create(name)
            self.state.namespaces.append(name)
            self.state.save()
            # sysctls before links: new interfaces inherit conf.default (accept_dad=0)
            nsexec.call_in_netns(name, nsexec.write_sysctls, spec.all_sysctls())
            with IPRoute(netns=name) as ipr:
                ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        for link in self.topo.links:
            self._add_link(link)
        for node, spec in self.topo.nodes.items():
            with IPRoute(netns=self.ns(node)) as ipr:
                for r in spec.routes:
                    self._add_route(ipr, node, r)
        self.wait_settled()
        self._built = True

    def wait_settled(self, timeout: float = 5.0) -> None:
        """Until every link is up and no IPv6 address is tentative.

        Even without DAD, addresses added before carrier stay tentative until
        the kernel's addrconf work runs; the first packets would fail.
        """
        deadline = time.monotonic() + timeout
        for node in self.topo.nodes:
            with IPRoute(netns=self.ns(node)) as ipr:
                while True:
                    tentative = [a.get("IFA_ADDRESS") for a in ipr.get_addr(family=socket.AF_INET6)
                                 if (a.get("IFA_FLAGS") or a["flags"]) & IFA_F_TENTATIVE]
                    down = [l.get("IFLA_IFNAME") for l in ipr.get_links()
                            if l.get("IFLA_IFNAME") != "lo" and l.get("IFLA_OPERSTATE") not in ("UP", "UNKNOWN")]
                    if not tentative and not down:
                        break
                    if time.monotonic() > deadline:
                        raise LabError(f"{node}: not settled after {timeout} s "
                                       f"(tentative {tentative}, down {down})")
                    time.sleep(0.02)

    def _add_link(self, link) -> None:
        a, b = link.a, link.b
        ns_a, ns_b = self.ns(a.node), self.ns(b.node)
        with IPRoute(netns=ns_a) as ipr:
            ipr.link("add", ifname=a.ifname, kind="veth", peer={"ifname": b.ifname, "net_ns_fd": ns_b})
        self.state.links.append((ns_a, a.ifname))
        self.state.save()
        for end, ns in ((a, ns_a), (b, ns_b)):
            with IPRoute(netns=ns) as ipr:
                idx = ipr.link_lookup(ifname=end.ifname)[0]
                if link.mtu:
                    ipr.link("set", index=idx, mtu=link.mtu)
                if end.mac:
                    ipr.link("set", index=idx, address=end.mac)
                for a_str in end.addresses:
                    ip = ipaddress.ip_interface(a_str)
                    ipr.addr("add", index=idx, address=str(ip.ip), prefixlen=ip.network.prefixlen)
                ipr.link("set", index=idx, state="up")
            if end.features:
                nsexec.call_in_netns(ns, nsexec.set_features, end.ifname, end.features)

    def _add_route(self, ipr: IPRoute, node: str, r) -> None:
        kw: dict[str, Any] = {}
        if r.dst in ("default", "default6"):
            kw["dst"] = "0.0.0.0/0" if r.dst == "default" else "::/0"
        else:
            kw["dst"] = r.dst
        kw["family"] = socket.AF_INET if r.family == 4 else socket.AF_INET6
        if r.via:
            kw["gateway"] = r.via
        if r.dev:
            kw["oif"] = ipr.link_lookup(ifname=r.dev)[0]
        if r.metric is not None:
            kw["priority"] = r.metric
        try:
            ipr.route("add", **kw)
        except Exception as exc:
            raise LabError(f"{node}: route {r.dst} via {r.via or r.dev}: {exc}") from exc

    def teardown(self) -> list[str]:
        """Remove what this run recorded, in reverse order. Returns the problems met (also printed)."""
        problems = teardown_state(self.state, self.procs)
        self.procs.clear()
        return problems

    # running things ----------------------------------------------------------
    def run(self, node: str, argv: Sequence[str], **kw: Any):
        """A short command in the node's namespace (subprocess.run; check=, timeout=, sysfs=, input=)."""
        return procs.run(self.ns(node), argv, **kw)

    def call(self, node: str, fn, *args: Any) -> Any:
        """A Python function run inside the node's namespace (forked child; result pickled back)."""
        return nsexec.call_in_netns(self.ns(node), fn, *args)

    def ipr(self, node: str) -> IPRoute:
        """A pyroute2 IPRoute bound to the node's namespace (close it, or use `with`)."""
        return IPRoute(netns=self.ns(node))

    def sysctl(self, node: str, values: dict[str, str | int]) -> None:
        self.call(node, nsexec.write_sysctls, {k: str(v) for k, v in values.items()})

    def start(self, node: str, name: str, argv: Sequence[str], *, ready: str | None = "ready",
              timeout: float = 30.0, sysfs: bool = False, pin_instance: str | None = None,
              env: dict[str, str] | None = None) -> procs.LabProcess:
        """Start a long-running program in a node; wait for its `ready` line (None: do not wait)."""
        key = (node, name)
        if key in self.procs and self.procs[key].alive():
            raise LabError(f"{name} already runs on {node}")
        if pin_instance:
            pin = str(BPF_PIN_ROOT / pin_instance)
            if pin not in self.state.pins:
                self.state.pins.append(pin)
        p = procs.LabProcess(self.ns(node), name, argv, self.rundir / "logs" / f"{node}.{name}.log",
                             sysfs=sysfs, env=env)
        self.procs[key] = p
        self.state.processes.append({"node": node, "name": name, "pid": p.pid, "started": p.started})
        self.state.save()
        if ready is not None:
            try:
                p.wait_ready(ready, timeout)
            except procs.ProcessError:
                self.stop(node, name)
                raise
        return p

    def start_declared(self, node: str, name: str, wait: bool = True, more_argv: Sequence[str] = (),
                       **overrides: str) -> procs.LabProcess:
        """Start a process declared in the topology file, with placeholder overrides
        and more_argv appended to its arguments.

        wait=False returns at once; call lab.wait_ready(node, name) later (start several in parallel)."""
        spec = next((p for p in self.topo.nodes[node].processes if p.name == name), None)
        if spec is None:
            raise KeyError(f"node {node} declares no process {name!r}")
        argv = [self.expand(node, a, spec, overrides) for a in spec.argv] + list(more_argv)
        uses_instance = any("{instance}" in a for a in spec.argv)
        ready = spec.ready or None  # TOML has no null: "" means "do not wait"
        p = self.start(node, name, argv, ready=ready if wait else None, timeout=spec.ready_timeout,
                       sysfs=spec.remount_sys, pin_instance=self.instance(node) if uses_instance else None)
        if not wait:
            p.ready_word, p.ready_timeout = ready, spec.ready_timeout
        return p

    def wait_ready(self, node: str, name: str) -> None:
        """Wait for a process started with wait=False; stops it if it fails."""
        p = self.procs[(node, name)]
        if p.ready_word is None:
            return
        try:
            p.wait_ready(p.ready_word, p.ready_timeout)
        except procs.ProcessError:
            self.stop(node, name)
            raise

    def start_all(self, **overrides: str) -> None:
        for node, spec in self.topo.nodes.items():
            for p in spec.processes:
                if p.autostart:
                    self.start_declared(node, p.name, True, **overrides)

    def expand(self, node: str, text: str, spec: Process | None = None, overrides: dict[str, str] | None = None) -> str:
        nspec = self.topo.nodes[node]
        values = {
            "python": sys.executable,
            "lispctl": str(Path(sys.executable).with_name("lispctl")),
            "ns": self.ns(node), "node": node, "prefix": self.prefix,
            "instance": self.instance(node), "topodir": str(self.topo.directory),
            "rundir": str(self.rundir),
            "config": str(self.topo.directory / nspec.config) if nspec.config else "",
        }
        if spec is not None:
            values.update(spec.vars)
        values.update(overrides or {})
        values = {k: v.format(**{**values, k: ""}) if isinstance(v, str) else v for k, v in values.items()}
        return text.format(**values)

    def stop(self, node: str, name: str) -> int | None:
        p = self.procs.pop((node, name), None)
        if p is None:
            return None
        rc = p.stop()
        self.state.processes = [d for d in self.state.processes if d["pid"] != p.pid]
        self.state.save()
        return rc

    def describe(self) -> str:
        lines = [f"lab {self.prefix} (topology {self.topo.name})"]
        for node, spec in self.topo.nodes.items():
            addrs = [f"{e.ifname}={','.join(e.addresses) or '-'}" for e in self.topo.interfaces(node)]
            lines.append(f"  {self.ns(node):<24} {spec.role:<8} {'  '.join(addrs)}")
        return "\n".join(lines)


def teardown_state(state: State, live: dict[tuple[str, str], procs.LabProcess] | None = None) -> list[str]:
    problems: list[str] = []
    live = live or {}
    live_pids = {p.pid: p for p in live.values()}
    for rec in reversed(state.processes):
        try:
            if rec["pid"] in live_pids:
                live_pids[rec["pid"]].stop()
            else:
                procs.kill_recorded(rec["pid"], rec.get("started"))
        except Exception as exc:
            problems.append(f"process {rec}: {exc}")
    for pin in state.pins:
        # only the exact directories recorded for this run's instances
        if os.path.isdir(pin):
            try:
                shutil.rmtree(pin)
            except OSError as exc:
                problems.append(f"pin {pin}: {exc}")
    present = set(_netns.listnetns())
    for ns, ifname in reversed(state.links):
        if ns not in present:
            continue
        try:
            with IPRoute(netns=ns) as ipr:
                idx = ipr.link_lookup(ifname=ifname)
                if idx:
                    ipr.link("del", index=idx[0])
        except Exception as exc:
            problems.append(f"link {ns}:{ifname}: {exc}")
    for ns in reversed(state.namespaces):
        if ns in present:
            try:
                _netns.remove(ns)
            except OSError as exc:
                problems.append(f"netns {ns}: {exc}")
    if not problems:
        shutil.rmtree(state.path.parent, ignore_errors=True)
    for p in problems:
        print(f"lab teardown: {p}", file=sys.stderr)
    return problems


def down(prefix: str) -> list[str]:
    """Tear down a lab kept by an earlier run, from its state file."""
    return teardown_state(State.load(prefix))


def kept_labs() -> list[str]:
    return sorted(p.parent.name for p in STATE_DIR.glob("*/state.json"))
