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
    eids: dict[int, str] = {}
    rlocs: dict[int, str] = {}
    for end in lab.topo.interfaces(xtr):
        for a in end.addresses:
            ip = ipaddress.ip_interface(a)
            if end.ifname.startswith("eid"):
                eids[ip.version] = str(ip.network)
            elif end.ifname.startswith("rloc"):
                rlocs[ip.version] = str(ip.ip)
    return Site(xtr, eids, rlocs)


def prefix_mappings(lab: Lab, xtr: str, rloc_family: int | dict[int, int] = 4) -> list[tuple[str, int]]:
    """The peer site's EID prefixes, each over an RLOC of the given family
    (4 or 6 for both EID families, or {eid_family: rloc_family})."""
    fam = rloc_family if isinstance(rloc_family, dict) else {4: rloc_family, 6: rloc_family}
    peer = site(lab, PEER[xtr])
    return [(peer.eids[v], fam[v]) for v in (4, 6)]


# host suffix -> RLOC family used for it in host_mappings (4: .2/::2, 6: .3/::3; .4/::4 unmapped)
HOST_SUFFIX = {4: 2, 6: 3}
UNMAPPED_SUFFIX = 4


def host_eid(lab: Lab, host: str, eid_family: int, rloc_family: int | None) -> str:
    """hostA/hostB's EID that is carried over `rloc_family` RLOCs (None: the unmapped one)."""
    suffix = UNMAPPED_SUFFIX if rloc_family is None else HOST_SUFFIX[rloc_family]
    xtr = {v: k for k, v in HOST.items()}[host]
    net = ipaddress.ip_network(site(lab, xtr).eids[eid_family])
    return str(net.network_address + suffix)


def host_mappings(lab: Lab, xtr: str) -> list[tuple[str, int]]:
    """Single-host mappings toward the peer's host: all four EID-family x RLOC-family
    combinations at once, each on its own pair of host addresses."""
    peer_host = HOST[PEER[xtr]]
    out = []
    for eid_v in (4, 6):
        for rloc_v in (4, 6):
            addr = host_eid(lab, peer_host, eid_v, rloc_v)
            out.append((f"{addr}/{32 if eid_v == 4 else 128}", rloc_v))
    return out


def static_config(lab: Lab, xtr: str, mappings: list[tuple[str, int]], iid: int = 0,
                  miss_action: str = "drop") -> dict[str, Any]:
    """Static-mapping JSON (docs/datapath.md) for one xTR: (EID prefix, RLOC family) pairs
    mapped to the peer xTR's RLOC of that family."""
    me, peer = site(lab, xtr), site(lab, PEER[xtr])
    tag = f"[{iid}]" if iid else ""
    return {
        "local_rlocs": sorted(me.rlocs.values()),
        "local_eids": [tag + e for e in me.eids.values()],
        "accept_iids": [iid],
        "mappings": [
            {"eid": tag + eid, "rlocs": [{"address": peer.rlocs[fam], "priority": 1, "weight": 100}],
             "action": "no-action"}
            for eid, fam in mappings
        ],
        "miss_action": miss_action,
        "petr": [],
    }


def start_datapaths(lab: Lab, rloc_family: int | dict[int, int] = 4, iid: int = 0,
                    mappings: str = "prefix") -> dict[str, Path]:
    """Write the static files and start the datapath on both xTRs (waits for 'ready').

    mappings: "prefix" (peer EID prefixes over rloc_family), "hosts" (host_mappings) or "none"."""
    files = {}
    for xtr in ("xtr1", "xtr2"):
        m = {"prefix": lambda: prefix_mappings(lab, xtr, rloc_family),
             "hosts": lambda: host_mappings(lab, xtr), "none": lambda: []}[mappings]()
        path = lab.rundir / f"{xtr}-static-{next(_seq)}.json"
        path.write_text(json.dumps(static_config(lab, xtr, m, iid), indent=1))
        files[xtr] = path
    # both compile their BPF programs at once (bcc needs seconds per instance)
    for xtr, path in files.items():
        lab.start_declared(xtr, "datapath", wait=False, static=str(path), iid=str(iid))
    for xtr in files:
        lab.wait_ready(xtr, "datapath")
    return files


def stop_datapaths(lab: Lab) -> None:
    for xtr in ("xtr1", "xtr2"):
        lab.stop(xtr, "datapath")


def counters_all(lab: Lab, xtrs: tuple[str, ...] = ("xtr1", "xtr2")) -> dict[str, dict[str, int]]:
    return {x: counters(lab, x) for x in xtrs}


def counters(lab: Lab, xtr: str) -> dict[str, int]:
    """The xTR's data-plane counters, read from its pinned maps (flat: drops as
    drop_<reason>). No compile, nothing attached: the running datapath process
    is not disturbed, and pins live on bpffs, outside any network namespace."""
    from lispctl.datapath.pinned import read_counters
    c = read_counters(lab.instance(xtr))
    out = {"encapsulated": c.encapsulated, "decapsulated": c.decapsulated, "miss": c.miss}
    out.update({f"drop_{k}": v for k, v in c.drops.items()})
    out.update(c.other)
    return out


@contextlib.contextmanager
def capture(lab: Lab, node: str, ifname: str, bpf_filter: str = "udp port 4341",
            count: int | None = None) -> Iterator[Path]:
    """tcpdump into a pcap in the run directory while the block runs."""
    path = lab.rundir / f"{node}-{ifname}-{next(_seq)}.pcap"
    name = f"tcpdump-{path.stem}"
    # A large buffer: with immediate mode, 45 KB GSO frames at line rate would
    # otherwise overflow the default 2 MB one and lose packets under load.
    argv = ["tcpdump", "-Z", "root", "-U", "--immediate-mode", "-B", "65536", "-n", "-i", ifname, "-w", str(path)]
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
    """tshark's malformed markers and expert items of warning/error severity, anywhere in a packet.

    TCP's sequence analysis (tcp.analysis: "previous segment not captured",
    retransmissions, duplicate ACKs) is left out: it judges the conversation
    as far as the capture saw it (a packet the capture ring dropped on a busy
    machine, a loss) rather than whether the bytes on the wire are well formed."""
    found: list[str] = []
    if isinstance(layers, dict):
        for k, v in layers.items():
            if k == "tcp.analysis":
                continue
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
