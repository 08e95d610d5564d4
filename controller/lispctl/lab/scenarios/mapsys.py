"""The `mapsys` topology: one xTR in two mapping systems, and Map-Resolver failover.

`run(lab, say)` is `make lab TOPO=mapsys`; tests/e2e/test_mapsys.py uses the
helpers:

    with Lab(load("mapsys")) as lab:
        start_mapsys(lab)
        registered(lab, "msA")          # {prefix: registered?}
        resolvers(lab)                  # xtr1's per-resolver state
"""
from __future__ import annotations

from typing import Callable

from ..procs import ProcessError
from ..runner import Lab
from . import control as cp

DEAD_MR = "172.16.11.9"


NODES = ("msA", "msB", "xtr1", "xtr2", "xtr3")


def start_mapsys(lab: Lab, nodes=NODES) -> None:
    """Every daemon at once (an xTR retries its first Map-Register)."""
    for n in nodes:
        cp.start_node(lab, n, wait=False)
    for n in nodes:
        cp.wait_node(lab, n)


def registered(lab: Lab, ms: str) -> dict[str, bool]:
    """{site prefix: registered} at one Map-Server."""
    return {p["prefix"]: p["registered"] for s in cp.api(lab, ms, "sites") for p in s["eid_prefixes"]}


def wait_registered(lab: Lab, timeout: float = 20.0) -> None:
    if not cp.eventually(lambda: all(registered(lab, "msA").values()) and all(registered(lab, "msB").values()),
                         timeout, 0.2):
        raise ProcessError(f"not registered within {timeout:.0f} s: msA {registered(lab, 'msA')}, "
                           f"msB {registered(lab, 'msB')}")


def resolvers(lab: Lab) -> dict[str, dict]:
    """xtr1's Map-Resolvers: requests, answers, skipped_for_s, ..."""
    state = cp.api(lab, "xtr1", "status")["state"]["itr"]
    return {r["address"]: r for r in state["map_resolver_state"]}


def run(lab: Lab, say: Callable[[str], None]) -> bool:
    ok = True
    say("\n[2/5] Starting msA and msB (MS+MR of two independent mapping systems), then xtr1-3")
    try:
        start_mapsys(lab)
        wait_registered(lab)
    except ProcessError as exc:
        say(f"      {exc}")
        return False
    say(f"      msA holds {registered(lab, 'msA')}")
    say(f"      msB holds {registered(lab, 'msB')}")
    say("      (xtr1 registered 10.1.0.0/24 with msA and 10.11.0.0/24 with msB, each with its own key)")

    say("\n[3/5] hostA -> hostB through system A: xtr1's first resolver for it is silent, so the")
    say("      first Map-Request is lost and the retry goes to msA")
    got = cp.ping(lab, "hostA", "10.2.0.2", count=7, timeout=1.0)
    say(f"      ping 10.1.0.2 -> 10.2.0.2: {got}/7")
    ok &= got >= 3
    say("\n[4/5] hostA (10.11.0.2) -> hostC through system B")
    got = lab.call("hostA", _ping_from, "10.3.0.2", "10.11.0.2")
    say(f"      ping 10.11.0.2 -> 10.3.0.2: {got}/5")
    ok &= got >= 3

    say("\n[5/5] xtr1's Map-Resolvers")
    for addr, r in resolvers(lab).items():
        say(f"      {addr:<13} {', '.join(r['eid_prefix']):<28} {r['requests']} requests, {r['answers']} answered, "
            f"skipped {r['times_skipped']}x" + (f" (for {r['skipped_for_s']} s more)" if r['skipped_for_s'] else ""))
    return ok


def _ping_from(dst: str, src: str) -> int:
    from ..traffic import ping_here
    return ping_here(dst, 5, 1.0, src=src)
