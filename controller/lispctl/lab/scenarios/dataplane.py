"""hostA -> hostB across two xTRs with static mappings: the `make lab` demonstration."""
from __future__ import annotations

import time
from typing import Callable

from .. import dataplane as dp
from ..procs import ProcessError
from ..runner import Lab
from ..traffic import iperf3, iperf3_gbps, ping_here


def run(lab: Lab, say: Callable[[str], None]) -> bool:
    ok = True
    a4, a6 = lab.addr("hostA", 4), lab.addr("hostA", 6)
    b4, b6 = lab.addr("hostB", 4), lab.addr("hostB", 6)

    say("\n[2/7] Without LISP, hostA cannot reach hostB: the router knows only RLOC networks")
    for dst in (b4, b6):
        got = lab.call("hostA", ping_here, dst, 1, 0.5)
        say(f"      ping {a4 if ':' not in dst else a6} -> {dst}: {'REPLY (unexpected!)' if got else 'no reply, as it should be'}")
        ok &= got == 0

    # IPv4 EIDs over IPv4 RLOCs and IPv6 EIDs over IPv6 RLOCs, so both underlays show up
    say("\n[3/7] Starting the eBPF data plane on xtr1 and xtr2 (static mappings)")
    try:
        files = dp.start_datapaths(lab, rloc_family={4: 4, 6: 6})
    except ProcessError as exc:
        say(f"      the data plane did not start:\n{exc}")
        return False
    for xtr, path in files.items():
        peer = dp.site(lab, dp.PEER[xtr])
        say(f"      {xtr}: {peer.eids[4]} -> RLOC {peer.rlocs[4]},  {peer.eids[6]} -> RLOC {peer.rlocs[6]}"
            f"   ({path})")

    say("\n[4/7] Ping across LISP, IPv4 and IPv6 EIDs")
    for src, dst in ((a4, b4), (a6, b6)):
        got = lab.call("hostA", ping_here, dst, 3, 1.0)
        say(f"      ping {src} -> {dst}: {got}/3 replies")
        ok &= got == 3

    say("\n[5/7] TCP for 2 s each way with iperf3 (hostA -> hostB)")
    for dst in (b4, b6):
        try:
            gbps = iperf3_gbps(iperf3(lab, "hostA", "hostB", dst, 2))
            say(f"      {dst}: {gbps:.2f} Gbit/s")
            ok &= gbps > 0
        except RuntimeError as exc:
            say(f"      {dst}: FAILED {exc}")
            ok = False

    say("\n[6/7] tshark on the underlay router (interface r1, capture filter 'udp port 4341')")
    say("      frame | IPv4 src (outer,inner) | IPv4 dst | IPv6 src (outer,inner) | IPv6 dst | UDP sport | dport | LISP flags | IID | nonce | inner proto | info")
    t = dp.live_decode(lab, "router", "r1", count=4)
    out = ""
    try:
        dp.wait_capturing(t)
        # keep a trickle of pings going until tshark has its packets
        deadline = time.monotonic() + 15
        while t.poll() is None and time.monotonic() < deadline:
            for dst in (b4, b6):
                lab.call("hostA", ping_here, dst, 1, 0.3)
        out = t.communicate(timeout=5)[0]
    except Exception as exc:
        say(f"      tshark: {exc}")
    finally:
        if t.poll() is None:
            t.kill()
            t.wait()
    lines = [line for line in out.splitlines() if line.strip()]
    for line in lines:
        say("      " + line)
    ok &= len(lines) >= 2

    say("\n[7/7] Data-plane counters")
    for xtr in ("xtr1", "xtr2"):
        try:
            c = {k: v for k, v in dp.counters(lab, xtr).items() if v}
            say(f"      {xtr}: " + ", ".join(f"{k}={v}" for k, v in c.items()))
        except Exception as exc:  # counters are informative; traffic already proved the point
            say(f"      {xtr}: counters unavailable ({exc})")
    return ok
