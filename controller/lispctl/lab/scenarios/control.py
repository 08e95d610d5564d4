"""The `control` topology: xTRs that learn mappings from a Map-Server/Map-Resolver.

`run(lab, say)` is the `make lab` demonstration. The other functions are
the building blocks the end-to-end tests (tests/e2e/) and the control-plane
benchmark share:

    with Lab(load("control")) as lab:
        start_control_plane(lab)                 # msmr, then xtr1 + xtr2
        wait_registered(lab, ("site1", "site2"))
        api(lab, "xtr1", "map-cache")            # the local API of a node's daemon

Each LISP node runs `lispctl up -c CONFIG --run-dir RUNDIR/run` in its own
namespace. CONFIG is a per-run copy of netns-lab/control/NODE.toml whose
`instance` is the lab's unique name for the node (pinned BPF maps, pidfile
and API socket never collide between parallel labs).
"""
from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from .. import dataplane as dp
from ..procs import LabProcess, ProcessError
from ..runner import Lab
from ..traffic import ping_here, tcp_send_here

DAEMON = "lispctl"                 # process name of the daemon on every LISP node
MSMR_ADDR = "192.0.2.10"           # Map-Server and Map-Resolver (xTR configs name it)
SITE_OF = {"xtr1": "site1", "xtr2": "site2", "xtr3": "site3"}
SINK_PORT = 5001
_INSTANCE_LINE = re.compile(r'^instance\s*=\s*"[^"]*"', re.M)


# -- daemons ------------------------------------------------------------------
def run_dir(lab: Lab) -> Path:
    """--run-dir of every daemon of the lab (pidfiles, API sockets)."""
    return lab.rundir / "run"


def config_text(lab: Lab, node: str) -> str:
    """The node's committed config (netns-lab/control/NODE.toml)."""
    spec = lab.topo.nodes[node]
    if spec.config is None:
        raise KeyError(f"node {node} has no lispctl config")
    return (lab.topo.directory / spec.config).read_text()


def render_config(lab: Lab, node: str, text: str | None = None, tag: str = "") -> Path:
    """Write the per-run copy of a node's config (or of `text`, a variant of
    it) with the lab's instance name; returns its path."""
    text = config_text(lab, node) if text is None else text
    if not _INSTANCE_LINE.search(text):
        raise ValueError(f"{node}: config has no top-level instance line")
    text = _INSTANCE_LINE.sub(f'instance = "{lab.instance(node)}"', text, count=1)
    path = lab.rundir / "configs" / f"{node}{'-' + tag if tag else ''}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def start_node(lab: Lab, node: str, config: Path | None = None, *, wait: bool = True,
               log_level: str | None = None) -> LabProcess:
    """`lispctl up` on a node (the per-run copy of its config unless given).
    wait=False: returns at once; call wait_node() (start several in parallel:
    an xTR compiles its BPF programs for a few seconds)."""
    spec = next(p for p in lab.topo.nodes[node].processes if p.name == DAEMON)
    cfg = config or render_config(lab, node)
    argv = [lab.expand(node, a, spec, {"config": str(cfg)}) for a in spec.argv]
    if log_level:
        argv += ["--log-level", log_level]
    p = lab.start(node, DAEMON, argv, ready=None, pin_instance=lab.instance(node))
    p.ready_word, p.ready_timeout = spec.ready, spec.ready_timeout
    if wait:
        lab.wait_ready(node, DAEMON)
    return p


def wait_node(lab: Lab, node: str) -> None:
    lab.wait_ready(node, DAEMON)


def stop_node(lab: Lab, node: str) -> int | None:
    """SIGTERM the node's daemon (it detaches and unpins its data plane); its exit status."""
    return lab.stop(node, DAEMON)


def start_control_plane(lab: Lab, nodes: Iterable[str] = ("xtr1", "xtr2"),
                        configs: dict[str, Path] | None = None) -> None:
    """The MS/MR first (so the first Map-Registers find it), then the xTRs in parallel."""
    configs = configs or {}
    start_node(lab, "msmr", configs.get("msmr"))
    nodes = list(nodes)
    for n in nodes:
        start_node(lab, n, configs.get(n), wait=False)
    for n in nodes:
        wait_node(lab, n)


def api(lab: Lab, node: str, cmd: str, timeout: float = 5.0) -> Any:
    """One request to the node's daemon over its local API."""
    from lispctl.api.client import ApiClient
    return ApiClient.for_instance(lab.instance(node), run_dir(lab), timeout=timeout).call(cmd)


def cli(lab: Lab, node: str, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
    """`lispctl ARGS -i <node's instance> --run-dir ...` inside the node (what a person types)."""
    argv = [lab.expand(node, "{python}"), "-m", "lispctl.cli", *args]
    if args and args[0] in ("status", "map-cache", "database", "sites", "counters", "down"):
        argv += ["-i" if args[0] != "down" else "--instance", lab.instance(node), "--run-dir", str(run_dir(lab))]
    return lab.run(node, argv, timeout=timeout)


def eventually(fn: Callable[[], Any], timeout: float = 10.0, interval: float = 0.1) -> Any:
    """fn()'s first truthy value within timeout, else its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


# -- views --------------------------------------------------------------------
def sites(lab: Lab) -> dict[str, dict]:
    """The MS's sites by name."""
    return {s["name"]: s for s in api(lab, "msmr", "sites")}


def registered_rlocs(site: dict) -> dict[str, list[str]]:
    """{site prefix: sorted locator addresses of its live registrations}."""
    out = {}
    for p in site["eid_prefixes"]:
        out[p["prefix"]] = sorted({l["address"] for r in p["registrations"] for l in r["rlocs"]})
    return out


def wait_registered(lab: Lab, names: Iterable[str] = ("site1", "site2"), timeout: float = 20.0) -> dict:
    """Until every prefix of the named sites is registered; the sites table."""
    names = list(names)

    def done():
        s = sites(lab)
        return s if all(p["registered"] for n in names for p in s[n]["eid_prefixes"]) else None
    s = eventually(done, timeout, 0.2)
    if not s:
        raise ProcessError(f"sites {names} not registered within {timeout:.0f} s: {sites(lab)}")
    return s


def map_cache(lab: Lab, node: str = "xtr1") -> dict[str, dict]:
    """The node's map-cache by EID text ("10.2.0.0/24"; "[iid]prefix" when iid != 0)."""
    return {e["eid"]: e for e in api(lab, node, "map-cache")}


def log_tail(lab: Lab, node: str, chars: int = 4000) -> str:
    """The end of the node daemon's log (for failure messages)."""
    p = lab.rundir / "logs" / f"{node}.{DAEMON}.log"
    return p.read_text(errors="replace")[-chars:] if p.exists() else f"(no log {p})"


def counters(lab: Lab, node: str) -> dict:
    return api(lab, node, "counters")


def entry_for(cache: dict[str, dict], addr: str) -> dict | None:
    """The most specific map-cache entry covering a host address."""
    import ipaddress
    ip = ipaddress.ip_address(addr)
    best = None
    for e in cache.values():
        net = ipaddress.ip_network(e["prefix"])
        if net.version == ip.version and ip in net and (best is None or net.prefixlen > best[0]):
            best = (net.prefixlen, e)
    return best[1] if best else None


# -- traffic --------------------------------------------------------------------
def ping(lab: Lab, src: str, dst: str, count: int = 5, timeout: float = 1.0) -> int:
    return lab.call(src, ping_here, dst, count, timeout)


def tcp_transfer(lab: Lab, src: str, dst_node: str, dst: str, nbytes: int = 1 << 20) -> dict:
    """A checked TCP transfer (the sink answers with the SHA-256 of what it got)."""
    name = f"sink-{SINK_PORT}"
    if (dst_node, name) not in lab.procs:
        lab.start(dst_node, name, [lab.expand(dst_node, "{python}"), "-m", "lispctl.lab.traffic",
                                   "sink", str(SINK_PORT)], ready="ready", timeout=15)
    return lab.call(src, tcp_send_here, dst, SINK_PORT, nbytes)


# -- the demonstration ------------------------------------------------------------
def _show(say, cp: subprocess.CompletedProcess) -> None:
    for line in (cp.stdout + cp.stderr).rstrip().splitlines():
        say("      " + line)


def _decoded_control(pcap: Path, limit: int = 14) -> list[str]:
    fields = ["frame.time_relative", "ip.src", "ip.dst", "_ws.col.Info"]
    argv = ["tshark", "-r", str(pcap), "-n", "-Y", "lisp", "-T", "fields", "-E", "separator=|"]
    for f in fields:
        argv += ["-e", f]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60).stdout
    rows = []
    for line in out.splitlines():
        parts = line.split("|")
        if len(parts) != 4:
            continue
        t, src, dst, info = parts
        rows.append(f"{float(t or 0):7.3f}s  {src.split(',')[0]:>15} -> {dst.split(',')[0]:<15} {info}")
    return rows[:limit]


def run(lab: Lab, say: Callable[[str], None]) -> bool:
    ok = True
    a4, a6 = lab.addr("hostA", 4), lab.addr("hostA", 6)
    b4, b6 = lab.addr("hostB", 4), lab.addr("hostB", 6)
    inst = {n: lab.instance(n) for n in ("msmr", "xtr1", "xtr2")}

    say("\n[2/7] Starting the control plane: `lispctl up` on msmr (MS+MR), then xtr1 and xtr2")
    say(f"      configs: {lab.topo.directory}/control/*.toml (per-run copies in {lab.rundir}/configs)")
    # Capture control traffic on xtr1's link from the start: registration, then resolution.
    with dp.capture(lab, "router", "r1", "udp port 4342") as pcap:
        try:
            start_control_plane(lab)
        except ProcessError as exc:
            say(f"      a daemon did not start:\n{exc}")
            return False
        for n in ("msmr", "xtr1", "xtr2"):
            say(f"      {n}: instance {inst[n]} ready (log: {lab.rundir}/logs/{n}.{DAEMON}.log)")

        say("\n[3/7] Waiting for both sites to register (Map-Register -> Map-Notify)")
        try:
            wait_registered(lab)
        except ProcessError as exc:
            say(f"      {exc}")
            return False
        say(f"      $ lispctl sites -i {inst['msmr']}      (on msmr)")
        _show(say, cli(lab, "msmr", "sites"))

        say("\n[4/7] Ping hostA -> hostB: the first packet misses in xtr1's map-cache; the data plane")
        say("      hands it to the daemon, which holds it while a Map-Request goes through the MR and")
        say("      sends it once the answer is installed; the first reply misses and is held the same")
        say("      way at xtr2 (the MS proxy-replies for site1): 5/5 is expected")
        for src, dst in ((a4, b4), (a6, b6)):
            got = ping(lab, "hostA", dst, count=5, timeout=1.0)
            say(f"      ping {src} -> {dst}: {got}/5 replies")
            ok &= got == 5

        say("\n[5/7] A 1 MB TCP transfer hostA -> hostB over each EID family")
        for dst in (b4, b6):
            try:
                r = tcp_transfer(lab, "hostA", "hostB", dst)
                say(f"      {dst}: {r['sent']} bytes in {r['seconds'] * 1000:.0f} ms, "
                    f"{'intact (SHA-256 matches)' if r['intact'] else 'CORRUPTED'}")
                ok &= r["intact"]
            except OSError as exc:
                say(f"      {dst}: FAILED {exc}")
                ok = False

    say(f"\n[6/7] What xtr1 learnt:   $ lispctl map-cache -i {inst['xtr1']}      (on xtr1)")
    _show(say, cli(lab, "xtr1", "map-cache"))
    try:
        c1, c2, cm = counters(lab, "xtr1"), counters(lab, "xtr2"), counters(lab, "msmr")
        itr, etr1 = c1["roles"].get("itr", {}), c1["roles"].get("etr", {})
        d = c1.get("datapath", {})
        say(f"      xtr1 ITR: {itr.get('miss', 0)} misses, {itr.get('map_request_tx', 0)} Map-Requests, "
            f"{itr.get('map_reply_rx', 0)} Map-Replies, {itr.get('installed', 0)} installed")
        say(f"      xtr1 data plane: {d.get('miss', 0)} misses, {d.get('encapsulated', 0)} encapsulated, "
            f"{d.get('decapsulated', 0)} decapsulated")
        say(f"      xtr1 ETR: {etr1.get('map_register_tx', 0)} Map-Registers, {etr1.get('map_notify_rx', 0)} "
            f"Map-Notifies, {etr1.get('map_reply_tx', 0)} Map-Replies (site1 is proxy-replied by the MS)")
        etr2 = c2["roles"].get("etr", {})
        say(f"      xtr2 ETR: {etr2.get('map_reply_tx', 0)} Map-Replies to forwarded Map-Requests")
        ms, mr = cm["roles"].get("ms", {}), cm["roles"].get("mr", {})
        say(f"      msmr: {ms.get('map_register_ok', 0)} Map-Registers accepted, "
            f"{ms.get('map_request_forwarded', 0)} Map-Requests forwarded to ETRs, "
            f"{ms.get('proxy_map_reply_tx', 0)} proxy Map-Replies, {mr.get('map_request_rx', 0)} requests at the MR")
    except Exception as exc:  # informative only; traffic already proved the point
        say(f"      counters unavailable: {exc}")

    say("\n[7/7] Control messages on xtr1's link, as tshark decodes them (router:r1, udp port 4342)")
    try:
        rows = _decoded_control(pcap)
        for row in rows:
            say("      " + row)
        ok &= any("Request" in r for r in rows) and any("Reply" in r for r in rows)
    except Exception as exc:
        say(f"      tshark: {exc}")
    if lab.keep:
        _explain_poking(lab, say)
    return ok


def _explain_poking(lab: Lab, say: Callable[[str], None]) -> None:
    rd, py = run_dir(lab), lab.expand("xtr1", "{lispctl}")
    say(f"\nThe daemons keep running. Their API sockets are files, so the show commands work from here:\n"
        f"    export LISPCTL_RUN_DIR={rd}\n"
        f"    {py} sites -i {lab.instance('msmr')}\n"
        f"    {py} map-cache -i {lab.instance('xtr1')}\n"
        f"    {py} counters -i {lab.instance('xtr2')}\n"
        f"lig needs the node's routes:\n"
        f"    nsenter --net=/run/netns/{lab.ns('xtr1')} {py} lig 10.2.0.2 --mr {MSMR_ADDR}")
