"""The `interworking` topology: a LISP site and a legacy host, through a
PxTR (Proxy-ITR + Proxy-ETR, RFC 6832) announced into BGP by BIRD.

`run(lab, say)` is the `make lab TOPO=interworking` demonstration; the
building blocks are shared with tests/e2e/test_interworking.py:

    with Lab(load("interworking")) as lab:
        start(lab)                          # BIRDs, msmr, xtr1, pxtr
        wait_bgp(lab, AGGREGATES)           # inet learnt the aggregates
        ping(lab, "legacy", "10.1.0.2")     # legacy -> PITR -> site

The daemons and their API helpers are those of the control scenario
(`lispctl up` per node, per-run config copies with unique instance names).
"""
from __future__ import annotations

import ipaddress
import socket
import subprocess
import time
from typing import Callable

from ..runner import Lab
from . import control as cp

AGGREGATES = ("10.1.0.0/16", "fd00:1::/48")
HOST4, HOST6 = "10.1.0.2", "fd00:1::2"
MN4, MN6 = "10.1.9.9", "fd00:1:0:9::9"          # the mobile node's EIDs
LISP_NODES = ("xtr1", "mn", "pxtr")
LEGACY4, LEGACY6 = "198.18.0.2", "2001:db8:18::2"     # on legacy (IPv4 only), legacy6 (IPv6 only)
# family -> (site host EID, legacy node, its address)
PATHS = {4: (HOST4, "legacy", LEGACY4), 6: (HOST6, "legacy6", LEGACY6)}
PXTR_RLOC = "203.0.113.20"
RTPROT_BIRD = 12

ping = cp.ping
tcp_transfer = cp.tcp_transfer
api = cp.api
counters = cp.counters
map_cache = cp.map_cache
eventually = cp.eventually


def start_bird(lab: Lab) -> None:
    for node in ("inet", "pxtr"):
        if (node, "bird") not in lab.procs:
            lab.start_declared(node, "bird")
    for node in ("inet", "pxtr"):
        if not eventually(lambda: birdc(lab, node, "show status").returncode == 0, 10):
            raise RuntimeError(f"BIRD on {node} does not answer: {birdc(lab, node, 'show status')}")


def start(lab: Lab) -> None:
    """BIRD on inet and pxtr, then the MS/MR, then the xTR, the mobile node
    and the PxTR (in parallel: each compiles its BPF programs)."""
    start_bird(lab)
    cp.start_node(lab, "msmr")
    for n in LISP_NODES:
        cp.start_node(lab, n, wait=False)
    for n in LISP_NODES:
        cp.wait_node(lab, n)


def birdc(lab: Lab, node: str, *cmd: str) -> subprocess.CompletedProcess:
    return lab.run(node, ["birdc", "-s", str(lab.rundir / f"bird-{node}.ctl"), *cmd], timeout=15)


def bgp_routes(lab: Lab, node: str = "inet") -> set[str]:
    """Prefixes BIRD installed in the node's main kernel table (learnt over BGP)."""
    out = set()
    with lab.ipr(node) as ipr:
        for fam in (socket.AF_INET, socket.AF_INET6):
            for r in ipr.get_routes(family=fam, proto=RTPROT_BIRD):
                dst = r.get_attr("RTA_DST")
                if dst is not None:
                    out.add(str(ipaddress.ip_network(f"{dst}/{r['dst_len']}")))
    return out


def announcement_routes(lab: Lab, table: int = 4343) -> set[str]:
    """What lispctl installed on pxtr for BIRD to export."""
    out = set()
    with lab.ipr("pxtr") as ipr:
        for fam in (socket.AF_INET, socket.AF_INET6):
            for r in ipr.get_routes(family=fam, table=table):
                dst = r.get_attr("RTA_DST")
                if dst is not None and r.get_attr("RTA_TABLE", r.get("table")) == table:
                    out.add(str(ipaddress.ip_network(f"{dst}/{r['dst_len']}")))
    return out


def wait_bgp(lab: Lab, want, present: bool = True, timeout: float = 20.0) -> float:
    """Until every prefix of want is (present=True) or none is (False) in
    inet's kernel table; returns the seconds it took, raises on timeout."""
    want = set(want)
    t0 = time.monotonic()
    ok = eventually(lambda: (want <= bgp_routes(lab)) if present else not (want & bgp_routes(lab)),
                    timeout, 0.05)
    if not ok:
        raise RuntimeError(f"inet's BGP routes: {sorted(bgp_routes(lab))}, wanted "
                           f"{'all' if present else 'none'} of {sorted(want)}")
    return time.monotonic() - t0


# -- the demonstration ------------------------------------------------------------
def run(lab: Lab, say: Callable[[str], None]) -> bool:
    ok = True

    def check(what: str, good: bool) -> None:
        nonlocal ok
        ok = ok and good
        say(f"      {'ok  ' if good else 'FAIL'} {what}")

    say("[2/7] Starting BIRD on inet and pxtr, the MS/MR, the site's xTR, the mobile node and the PxTR")
    start(lab)
    cp.wait_registered(lab, ("site1", "mn"))
    say("[3/7] The PITR announces its EID aggregates once a Map-Resolver answers; BIRD on inet learns them")
    took = wait_bgp(lab, AGGREGATES)
    for line in birdc(lab, "inet", "show", "route").stdout.rstrip().splitlines():
        say("      " + line)
    check(f"inet learnt {', '.join(AGGREGATES)} over BGP ({took:.1f} s)", True)
    say("[4/7] legacy -> PITR -> site and site -> PETR -> legacy: pings (the IPv6-only legacy host "
        "and the site's IPv6 EIDs over its IPv4-only provider)")
    for src, dst in (("legacy", HOST4), ("legacy6", HOST6), ("hostA", LEGACY4), ("hostA", LEGACY6),
                     ("legacy", MN4), ("legacy6", MN6), ("mn", LEGACY4), ("mn", LEGACY6)):
        ping(lab, src, dst, count=2, timeout=0.5)          # first packets resolve the mapping
        got = ping(lab, src, dst, count=5, timeout=1.0)
        check(f"{src} -> {dst}: {got}/5 replies", got == 5)
    say("[5/7] Checked 1 MB TCP transfers both ways, both families")
    for src, dst_node, dst in (("legacy", "hostA", HOST4), ("legacy6", "hostA", HOST6),
                               ("hostA", "legacy", LEGACY4), ("hostA", "legacy6", LEGACY6)):
        r = tcp_transfer(lab, src, dst_node, dst, 1 << 20)
        check(f"{src} -> {dst}: {r['sent']} bytes, intact={r['intact']}", bool(r["intact"]))
    c = counters(lab, "pxtr")["datapath"]
    say(f"      pxtr data plane: encapsulated {c['encapsulated']}, decapsulated {c['decapsulated']}, "
        f"petr_forwarded {c['other'].get('petr_forwarded')}, pitr_passed {c['other'].get('pitr_passed')}")
    say("[6/7] The PITR stops: its routes leave table 4343, BIRD withdraws them")
    cp.stop_node(lab, "pxtr")
    took = wait_bgp(lab, AGGREGATES, present=False, timeout=10)
    check(f"inet's table without the aggregates {took:.2f} s after the daemon stopped", took <= 3.0)
    say(f"      inet routes now: {sorted(bgp_routes(lab)) or 'none learnt over BGP'}")
    say("[7/7] The PITR starts again: re-announced")
    cp.start_node(lab, "pxtr")
    took = wait_bgp(lab, AGGREGATES, timeout=30)
    check(f"re-announced {took:.1f} s after start", True)
    got = ping(lab, "legacy", HOST4, count=3, timeout=1.0) + ping(lab, "legacy", HOST4, count=3, timeout=1.0)
    check(f"legacy -> {HOST4} again: {got}/6 replies", got >= 3)
    return ok
