"""The `dataplane` topology's scenario pieces, shared by `make lab`, tests and benchmarks.

Knows the site plan (which EIDs and RLOCs sit behind which xTR, read from the
topology file), writes static-mapping files for `python -m lispctl.datapath`,
starts the xTRs' data planes, captures underlay packets and decodes them with
tshark.
"""
from __future__ import annotations

import contextlib
import ipaddress
import itertools
import json
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from .runner import Lab

PEER = {"xtr1": "xtr2", "xtr2": "xtr1"}
HOST = {"xtr1": "hostA", "xtr2": "hostB"}
_seq = itertools.count()


@dataclass(frozen=True)
class Site:
    xtr: str
    eids: dict[int, str]     # family -> EID prefix
    rlocs: dict[int, str]    # family -> RLOC address


def site(lab: Lab, xtr: str) -> Site:
    eids, rlocs = {}, {}
    for end in lab.topo.interfaces(xtr):
        for a in end.addresses:
            ip = ipaddress.ip_interface(a)
            if end.ifname.startswith("eid"):
                eids[ip.version] = str(ip.network)
            elif end.ifname.startswith("rloc"):
                rlocs[ip.version] = str(ip.ip)
    return Site(xtr, eids, rlocs)


def static_config(lab: Lab, xtr: str, rloc_family: int | dict[int, int] = 4, iid: int = 0,
                  mappings: bool = True, miss_action: str = "drop") -> dict[str, Any]:
    """Static-mapping JSON for one xTR: the peer site's EIDs mapped to the peer's RLOC.

    rloc_family: 4 or 6 for both EID families, or {eid_family: rloc_family}.
    """
    me, peer = site(lab, xtr), site(lab, PEER[xtr])
    fam = rloc_family if isinstance(rloc_family, dict) else {4: rloc_family, 6: rloc_family}
    tag = f"[{iid}]" if iid else ""
    return {
        "local_rlocs": sorted(me.rlocs.values()),
        "local_eids": [tag + e for e in me.eids.values()],
        "mappings": [
            {"eid": tag + peer.eids[v],
             "rlocs": [{"address": peer.rlocs[fam[v]], "priority": 1, "weight": 100}],
             "action": "no-action"}
            for v in (4, 6)
        ] if mappings else [],
        "miss_action": miss_action,
        "petr": None,
    }


def start_datapaths(lab: Lab, rloc_family: int | dict[int, int] = 4, iid: int = 0,
                    mappings: bool = True) -> dict[str, Path]:
    """Write the static files and start the datapath on both xTRs (waits for 'ready')."""
    files = {}
    for xtr in ("xtr1", "xtr2"):
        path = lab.rundir / f"{xtr}-static-{next(_seq)}.json"
        path.write_text(json.dumps(static_config(lab, xtr, rloc_family, iid, mappings), indent=1))
        files[xtr] = path
    for xtr, path in files.items():
        lab.start_declared(xtr, "datapath", static=str(path))
    return files


def stop_datapaths(lab: Lab) -> None:
    for xtr in ("xtr1", "xtr2"):
        lab.stop(xtr, "datapath")


def counters(lab: Lab, xtr: str) -> dict[str, int]:
    """The xTR's data-plane counters, read from its pinned maps."""
    from lispctl.datapath import Datapath  # only when a datapath exists
    dp = Datapath.open(instance=lab.instance(xtr))
    try:
        return {str(k): int(v) for k, v in dp.counters().items()}
    finally:
        dp.close(unpin=False)


@contextlib.contextmanager
def capture(lab: Lab, node: str, ifname: str, bpf_filter: str = "udp port 4341",
            count: int | None = None) -> Iterator[Path]:
    """tcpdump into a pcap in the run directory while the block runs."""
    path = lab.rundir / f"{node}-{ifname}-{next(_seq)}.pcap"
    name = f"tcpdump-{path.stem}"
    argv = ["tcpdump", "-Z", "root", "-U", "-n", "-i", ifname, "-w", str(path)]
    if count:
        argv += ["-c", str(count)]
    lab.start(node, name, argv + [bpf_filter], ready="tcpdump: listening on", timeout=10)
    try:
        yield path
    finally:
        time.sleep(0.2)  # let the last packets reach the file
        lab.stop(node, name)


def tshark_json(pcap: Path) -> list[dict[str, Any]]:
    """Each packet's layers as tshark decodes them (repeated layers become lists)."""
    out = subprocess.run(["tshark", "-r", str(pcap), "-T", "json", "--no-duplicate-keys"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return [p["_source"]["layers"] for p in json.loads(out or "[]")]


def expert_problems(layers: Any, path: str = "") -> list[str]:
    """tshark's malformed markers and expert items of warning/error severity, anywhere in a packet."""
    found = []
    if isinstance(layers, dict):
        for k, v in layers.items():
            if k == "_ws.malformed" or k.startswith("_ws.malformed"):
                found.append(f"{path}{k}")
            if k == "_ws.expert":
                items = v if isinstance(v, list) else [v]
                for item in items:
                    sev = str(item.get("_ws.expert.severity", "")) if isinstance(item, dict) else ""
                    # severities are Wireshark's PI_ values: 0x00600000 warning, 0x00800000 error
                    if sev in ("6291456", "8388608"):
                        found.append(f"{path}{k}: {item.get('_ws.expert.message')}")
            found += expert_problems(v, f"{path}{k}/")
    elif isinstance(layers, list):
        for v in layers:
            found += expert_problems(v, path)
    return found


def live_decode(lab: Lab, node: str, ifname: str, count: int = 4) -> subprocess.Popen:
    """tshark -i in the underlay, one line per LISP data packet (for people to read)."""
    from .nsexec import preexec
    fields = ["frame.number", "ip.src", "ip.dst", "ipv6.src", "ipv6.dst", "udp.srcport", "udp.dstport",
              "lisp-data.flags", "lisp-data.iid", "lisp-data.nonce", "_ws.col.Protocol", "_ws.col.Info"]
    argv = ["tshark", "-l", "-n", "-i", ifname, "-f", "udp port 4341", "-c", str(count), "-T", "fields",
            "-E", "separator=|", "-E", "occurrence=a", "-E", "aggregator=,"]
    for f in fields:
        argv += ["-e", f]
    return subprocess.Popen(argv, preexec_fn=preexec(lab.ns(node)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_capturing(p: subprocess.Popen, timeout: float = 15.0) -> None:
    """tshark says "Capturing on 'IF'" on stderr once its socket is open."""
    deadline = time.monotonic() + timeout
    assert p.stderr is not None
    buf = ""
    while time.monotonic() < deadline:
        line = p.stderr.readline()
        if not line:
            break
        buf += line
        if re.search(r"Capturing on", line):
            return
    raise RuntimeError(f"tshark did not start capturing:\n{buf}")
