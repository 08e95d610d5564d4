"""Handover of a mobile node between an uplink behind a NAT and a public one
(netns lab `nat`, docs/nat.md).

hostP (behind the correspondent xTR pub, subscribed to mob's mapping) sends
a constant-rate UDP stream (one packet per millisecond) to the mobile node
mob's EID. mob's preferred uplink home0 sits behind the lab's nftables NAT,
pub0 is public. Each round has two handovers, each timed from just before
the change (monotonic clock shared by all namespaces) to the first stream
packet arriving at mob's new address (AF_PACKET on that uplink: LISP data
to the address and port 4341, not from 4342, which is control):

- nat_to_public: home0 loses its carrier (the NAT's end of the link goes
  down). Contains: netlink event -> mob's daemon (home0's RLOC leaves the
  data plane and the NAT role, the ETR registers pub0 directly) -> the MS
  notifies pub (publish/subscribe) -> pub's next packet goes to pub0.
- public_to_nat: home0's carrier returns. Contains: netlink event -> a NAT
  check (Info-Request/Info-Reply through the NAT) -> an ECM'd Map-Register
  to the RTR -> the RTR forwards it to the MS -> the MS notifies pub -> pub
  sends to the RTR -> the RTR re-encapsulates to the NAT's translated port
  -> the NAT -> home0.
"""
from __future__ import annotations

import statistics
import time

from lispctl.lab import Lab, load
from lispctl.lab.scenarios import mobile as m
from lispctl.lab.scenarios import nat as nt

from .bench_handover import _p99

SECTION = "Mobile node handover behind a NAT (netns lab)"
HANDOVERS = 20
# Changes of home0's carrier at least this far apart: the kernel's linkwatch
# reports carrier changes of such a veth at most once per second, and mob's
# keepalive (5 s) must not be the thing measured.
GAP_S = 1.5


def _first_on(lab: Lab, name: str, ifname: str, address: str, change, not_before: float) -> float | None:
    """Start the detector on ifname, make the change at not_before; ms to the first packet."""
    time.sleep(max(0.0, not_before - time.monotonic() - 0.4))
    p = m.start_tool(lab, nt.MOB, name, "first-packet", ifname, address, 5)
    time.sleep(max(0.0, not_before - time.monotonic()))
    t0 = change()
    first = None
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline and first is None:
        for line in p.output().splitlines():
            if line.startswith("first "):
                first = float(line.split()[1])
            elif line.strip() == "none":
                deadline = 0
        time.sleep(0.005)
    lab.stop(nt.MOB, name)
    return None if first is None else (first - t0) * 1000


def run(rec) -> None:
    out: dict[str, list[float]] = {"nat_to_public": [], "public_to_nat": []}
    with Lab(load("nat")) as lab:
        nt.start_mobile(lab)
        if not nt.warm_up_mobile(lab):
            raise RuntimeError("mob and hostP do not reach each other")
        if not nt.wait_mob_locator(lab, nt.RTR_RLOC):
            raise RuntimeError(f"unexpected start state: {nt.mob_entry(lab)}")
        m.start_tool(lab, nt.CORR_HOST, "udp-nat", "udp-stream", nt.MOB_EID, 9, 0.001)
        try:
            last = time.monotonic()
            for i in range(HANDOVERS):
                ms = _first_on(lab, f"first-pub-{i}", "pub0", nt.MOB_PUBLIC,
                               lambda: nt.set_home(lab, False), last + GAP_S)
                last = time.monotonic()
                if ms is not None:
                    out["nat_to_public"].append(ms)
                ms = _first_on(lab, f"first-home-{i}", "home0", nt.MOB_HOME,
                               lambda: nt.set_home(lab, True), last + GAP_S)
                last = time.monotonic()
                if ms is not None:
                    out["public_to_nat"].append(ms)
                if not nt.wait_mob_locator(lab, nt.RTR_RLOC):
                    raise RuntimeError(f"pub did not return to the RTR: {nt.mob_entry(lab)}")
        finally:
            lab.stop(nt.CORR_HOST, "udp-nat")
            nt.set_home(lab, True)
    for name, lat in out.items():
        if len(lat) < HANDOVERS:
            rec.note(f"- {name}: {HANDOVERS - len(lat)} of {HANDOVERS} handovers saw no packet within 5 s")
        if lat:
            rec.figure(f"nat_handover_{name}_median_ms", round(statistics.median(lat), 2))
            rec.figure(f"nat_handover_{name}_p99_ms", round(_p99(lat), 2))
    rec.note(f"A mobile node (mob) with its preferred uplink behind an nftables NAT and a public one, "
             f"{HANDOVERS} rounds: the NATed uplink's carrier goes (nat_to_public) and returns "
             "(public_to_nat); latency until the first packet of a 1 packet/ms UDP stream from the "
             "correspondent arrives at mob's new address (AF_PACKET, shared monotonic clock). p99 is the "
             "nearest-rank percentile, i.e. the maximum of 20. Changes are at least "
             f"{GAP_S} s apart (the kernel reports a veth's carrier changes at most once per second).")
    rec.note("")
    rec.note("| handover | median ms | p99 (max) ms | min ms | what it contains |")
    rec.note("|---|---|---|---|---|")
    what = {"nat_to_public": "netlink -> direct Map-Register -> MS -> Map-Notify to the subscriber",
            "public_to_nat": "netlink -> Info-Request/Reply -> ECM'd Map-Register via the RTR -> MS -> "
                             "Map-Notify to the subscriber -> RTR re-encapsulation to the NAT's port"}
    for name, lat in out.items():
        if lat:
            rec.note(f"| {name} | {statistics.median(lat):.1f} | {_p99(lat):.1f} | {min(lat):.1f} | {what[name]} |")
    rec.note("")
    rec.note("Control-plane-bound, not data-path-bound: the stream is 1 packet/ms, so the figures carry up "
             "to 1 ms of sampling granularity; the rest is message round trips and the daemons' event "
             "handling (Python), which a loaded machine stretches.")
