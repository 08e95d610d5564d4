"""RLOC probing end to end in the `probe` namespace lab (netns-lab/probe.toml):
real daemons, real sockets, real BPF locator sets.

xtr2 registers two locators of equal priority and weight, one per router
link; xtr1 probes each locator of its map-cache every second. The path to
one locator is broken inside the underlay (a blackhole route on the router),
so xtr2 notices nothing locally and still registers both: only unanswered
probes can take the locator out of xtr1's selection, and only answered ones
can put it back. Which locator carries each flow is read off xtr1's
encapsulated packets, captured on the router's end of xtr1's link.

One lab for the module; the tests run in file order (steady state, break,
repair) and the repair test removes the blackhole whatever happened before.
"""
from __future__ import annotations

import subprocess
import time
from collections import Counter

import pytest

from lispctl.lab import Lab, load
from lispctl.lab.dataplane import capture
from lispctl.lab.scenarios import control as cp
from lispctl.lab.scenarios.mobile import udp_flows_here
from tests.conftest import need_root

pytestmark = pytest.mark.root

HOST_B = "10.2.0.2"
PREFIX = "10.2.0.0/24"
XTR1_RLOC = "198.51.100.1"
KEPT, BROKEN = "203.0.113.2", "203.0.113.66"       # xtr2's rloc0 and rloc1
FLOWS = 1000                 # distinct UDP source ports; a 50/50 split's noise is ~1.6 points
DETECT_S = 10.0              # generous bound: the config detects in interval + retries * timeout = 2 s


@pytest.fixture(scope="module")
def lab():
    need_root()
    with Lab(load("probe")) as lab:
        cp.start_control_plane(lab)
        cp.wait_registered(lab, ("site1", "site2"))
        # resolve in both directions (xtr2 learns site1 from the MS's proxy reply)
        assert cp.eventually(lambda: cp.ping(lab, "hostA", HOST_B, count=1, timeout=0.5), 10), \
            cp.log_tail(lab, "xtr1")
        yield lab


def _rlocs(lab) -> dict[str, dict]:
    entry = cp.map_cache(lab, "xtr1").get(PREFIX)
    return {r["address"]: r for r in entry["rlocs"]} if entry else {}


def _reachable(lab) -> dict[str, bool]:
    return {a: r["reachable"] for a, r in _rlocs(lab).items()}


def _probes(lab) -> dict[str, dict]:
    return {p["address"]: p for p in cp.api(lab, "xtr1", "status")["state"]["itr"]["rloc_probes"]}


def _wait_reachable(lab, want: dict[str, bool]) -> float | None:
    """Seconds until xtr1's installed entry shows exactly this reachability; None if never."""
    t0 = time.monotonic()
    ok = cp.eventually(lambda: _reachable(lab) == want, DETECT_S, 0.05)
    return time.monotonic() - t0 if ok else None


def _blackhole(lab, on: bool) -> None:
    """Break (or repair) the underlay path to xtr2's rloc1, on the router only."""
    with lab.ipr("router") as ipr:
        if on:
            ipr.route("add", dst=f"{BROKEN}/32", type="blackhole")
        else:
            try:
                ipr.route("del", dst=f"{BROKEN}/32", type="blackhole")
            except Exception:        # not there (the break test failed before adding it)
                pass


def _tshark_fields(pcap, fields: list[str], display_filter: str = "") -> list[list[str]]:
    argv = ["tshark", "-r", str(pcap), "-n", "-T", "fields", "-E", "separator=|"]
    if display_filter:
        argv += ["-Y", display_filter]
    for f in fields:
        argv += ["-e", f]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout
    return [line.split("|") for line in out.splitlines() if line]


def _flow_split(lab, first_sport: int) -> Counter:
    """Send FLOWS one-datagram UDP flows hostA -> hostB; xtr1's encapsulated
    packets per outer destination, as seen on the router."""
    with capture(lab, "router", "r1", f"udp dst port 4341 and src host {XTR1_RLOC}") as pcap:
        sent = lab.call("hostA", udp_flows_here, HOST_B, 9, FLOWS, 1, first_sport)
        assert sent == FLOWS
        # tcpdump gets packets in blocks retired after up to 1 s; stopping
        # sooner loses the last block (capture() does not ask for immediate mode)
        time.sleep(1.2)
    # ip.dst lists the outer then the inner destination
    return Counter(row[0].split(",")[0] for row in _tshark_fields(pcap, ["ip.dst"]))


def test_both_locators_are_probed_and_reachable(lab):
    assert _wait_reachable(lab, {KEPT: True, BROKEN: True}) is not None, _rlocs(lab)
    assert {(a, r["priority"], r["weight"]) for a, r in _rlocs(lab).items()} == {(KEPT, 1, 50), (BROKEN, 1, 50)}

    def measured():
        p = _probes(lab)
        return p if set(p) == {KEPT, BROKEN} and all(s["rtt_ms"] is not None for s in p.values()) else None
    probes = cp.eventually(measured, 5)
    assert probes, _probes(lab)
    for addr, st in probes.items():
        assert st["reachable"] and st["misses"] == 0 and 0 < st["rtt_ms"] < 1000, st
        assert st["eids"] == [PREFIX]
    itr = cp.counters(lab, "xtr1")["roles"]["itr"]
    etr2 = cp.counters(lab, "xtr2")["roles"]["etr"]
    assert itr["rloc_probe_tx"] >= 2 and itr["rloc_probe_reply_rx"] >= 2, itr
    assert etr2["rloc_probe_reply_tx"] >= 2, etr2


def test_probes_on_the_wire_carry_p_bit_and_nonce(lab):
    # 2.5 intervals: at least two probes per locator, each answered
    with capture(lab, "router", "r1", "udp port 4342") as pcap:
        time.sleep(2.5)
    fields = ["lisp.type", "ip.src", "ip.dst", "udp.srcport", "lisp.nonce",
              "lisp.mreq.flags.probe", "lisp.mrep.flags.probe", "lisp.loc.locator", "lisp.loc.flags.probe"]
    rows = _tshark_fields(pcap, fields, "lisp")
    requests = {r[4]: r for r in rows if r[0] == "1"}
    replies = {r[4]: r for r in rows if r[0] == "2"}
    to = Counter(r[2] for r in requests.values())
    assert to[KEPT] >= 2 and to[BROKEN] >= 2, rows
    for nonce, r in requests.items():
        # from xtr1's RLOC, to the locator itself, P bit set
        assert r[1] == XTR1_RLOC and r[3] == "4342" and r[5] in ("1", "True"), r
        rep = replies.get(nonce)
        assert rep is not None, (f"probe {nonce} to {r[2]} unanswered", rows)
        # answered from the probed locator, P bit, same nonce, probed locator marked
        assert rep[1] == r[2] and rep[2] == XTR1_RLOC and rep[6] in ("1", "True"), rep
        locs, pbits = rep[7].split(","), rep[8].split(",")
        assert sorted(locs) == [KEPT, BROKEN], rep
        assert [l for l, p in zip(locs, pbits) if p in ("1", "True")] == [r[2]], rep


def test_flows_split_over_both_locators(lab):
    split = _flow_split(lab, 20000)
    assert split[KEPT] + split[BROKEN] == FLOWS and set(split) <= {KEPT, BROKEN}, split
    assert abs(split[KEPT] / FLOWS - 0.5) < 0.08, split


def test_broken_path_takes_the_locator_out(lab):
    before = cp.counters(lab, "xtr1")["roles"]["itr"]
    _blackhole(lab, True)
    took = _wait_reachable(lab, {KEPT: True, BROKEN: False})
    assert took is not None, (_rlocs(lab), _probes(lab), cp.log_tail(lab, "xtr1"))
    print(f"\n{BROKEN} unreachable {took:.2f} s after the underlay broke")
    st = _probes(lab)
    assert not st[BROKEN]["reachable"] and st[BROKEN]["misses"] >= 2 and st[KEPT]["reachable"], st
    itr = cp.counters(lab, "xtr1")["roles"]["itr"]
    assert itr["rloc_unreachable"] == before.get("rloc_unreachable", 0) + 1, itr
    assert itr["rloc_probe_lost"] >= before.get("rloc_probe_lost", 0) + 2, itr
    # xtr2 noticed nothing: it still registers both locators
    assert cp.registered_rlocs(cp.sites(lab)["site2"]) == {PREFIX: [KEPT, BROKEN]}

    # the BPF locator set: every flow is encapsulated to the remaining locator, and arrives
    dec0 = cp.counters(lab, "xtr2")["datapath"]["decapsulated"]
    split = _flow_split(lab, 30000)
    assert split == {KEPT: FLOWS}, split
    assert cp.eventually(lambda: cp.counters(lab, "xtr2")["datapath"]["decapsulated"] - dec0 >= FLOWS, 5)
    assert cp.ping(lab, "hostA", HOST_B, count=5, timeout=1.0) == 5
    r = cp.tcp_transfer(lab, "hostA", "hostB", HOST_B, 256 * 1024)
    assert r["intact"] and r["sent"] == 256 * 1024, r


def test_restored_path_puts_the_locator_back(lab):
    before = cp.counters(lab, "xtr1")["roles"]["itr"]
    _blackhole(lab, False)
    took = _wait_reachable(lab, {KEPT: True, BROKEN: True})
    assert took is not None, (_rlocs(lab), _probes(lab), cp.log_tail(lab, "xtr1"))
    print(f"\n{BROKEN} reachable again {took:.2f} s after the underlay was repaired")
    assert cp.counters(lab, "xtr1")["roles"]["itr"]["rloc_reachable_again"] == \
        before.get("rloc_reachable_again", 0) + 1
    split = _flow_split(lab, 40000)
    assert split[KEPT] + split[BROKEN] == FLOWS, split
    assert abs(split[KEPT] / FLOWS - 0.5) < 0.08, split
