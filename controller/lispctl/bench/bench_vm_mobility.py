"""VM mobility with the Change-Priority Message (netns lab `vm-mobility`).

The correspondent (corr) sends a constant-rate UDP stream (one packet per
millisecond) to the VM's EID. Each move: the VM's NIC in the source data
centre goes down and the one in the destination comes up, the source
hypervisor sends a CPM demoting its xTR's locators (255), the destination
hypervisor one promoting its own (1) with the correspondent listed. The
latency is from the destination CPM leaving `lispctl cpm` (its timestamp)
to the first stream packet arriving encapsulated at the destination xTR's
RLOC (AF_PACKET on its rloc0; namespaces share the host clocks).

What it contains: CPM -> destination xTR (verify, re-register, resolve the
correspondent's mapping, SMR) -> correspondent's ITR (SMR-invoked
Map-Request, proxy-reply from the MS with the merged locators) -> its new
map-cache entry -> the next stream packet. Moves alternate DC1 -> DC2 and
back.
"""
from __future__ import annotations

import math
import statistics
import time

from lispctl.lab import Lab, load
from lispctl.lab.scenarios import mobile as m
from lispctl.lab.scenarios import vm_mobility as vm

SECTION = "VM mobility: Change-Priority Message (netns lab)"
MOVES = 20


def _p99(values: list[float]) -> float:
    s = sorted(values)
    return s[max(0, math.ceil(0.99 * len(s)) - 1)]        # nearest rank: the maximum for n < 100


def _move(lab: Lab, i: int, to: str) -> float | None:
    src = "dc1" if to == "dc2" else "dc2"
    name = f"first-{i}"
    p = m.start_tool(lab, to, name, "first-packet", "rloc0", vm.RLOC[to], 10)
    try:
        vm.migrate(lab, to)
        vm.cpm(lab, src, 255)
        sent = vm.cpm(lab, to, 1, [vm.CORR])["timestamp_ms"] / 1000.0
        t0 = sent - (time.time() - time.monotonic())           # on the monotonic clock
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for line in p.output().splitlines():
                if line.startswith("first "):
                    return (float(line.split()[1]) - t0) * 1000
                if line.strip() == "none":
                    return None
            time.sleep(0.005)
        return None
    finally:
        lab.stop(to, name)


def run(rec) -> None:
    with Lab(load("vm-mobility")) as lab:
        vm.start(lab)
        m.start_tool(lab, "corr", "udp", "udp-stream", vm.VM_EID, 9, 0.001)
        lat, to = [], "dc2"
        for i in range(MOVES):
            ms = _move(lab, i, to)
            if ms is not None:
                lat.append(ms)
            to = "dc1" if to == "dc2" else "dc2"
        lab.stop("corr", "udp")
    if len(lat) < MOVES:
        rec.note(f"- {MOVES - len(lat)} of {MOVES} moves saw no stream packet at the new data centre within 10 s")
    if not lat:
        return
    rec.figure("cpm_move_median_ms", round(statistics.median(lat), 2))
    rec.figure("cpm_move_p99_ms", round(_p99(lat), 2))
    rec.note(f"{MOVES} VM moves between two data centres (alternating): the destination hypervisor's "
             "Change-Priority Message leaving `lispctl cpm` until the first packet of the correspondent's "
             "1 packet/ms UDP stream arrives encapsulated at the destination xTR (AF_PACKET). "
             "p99 is the nearest-rank percentile, i.e. the maximum of 20.")
    rec.note("")
    rec.note("| moves | median ms | p99 (max) ms | min ms |")
    rec.note("|---|---|---|---|")
    rec.note(f"| {len(lat)} | {statistics.median(lat):.1f} | {_p99(lat):.1f} | {min(lat):.1f} |")
