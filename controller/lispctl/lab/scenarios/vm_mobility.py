"""The `vm-mobility` topology: a VM keeps its /32 EID while it moves from
data centre 1 to data centre 2; the hypervisors' Change-Priority Messages
(`lispctl cpm`, docs/cpm.md) redirect its correspondent's traffic and the
correspondent's TCP session survives.

    with Lab(load("vm-mobility")) as lab:
        start(lab)                                  # daemons, VM in DC1, registered
        with Trickle(lab) as t:                     # corr -> VM TCP session
            migrate(lab)                            # VM's NIC in DC1 down, in DC2 up
            took = send_cpms(lab)                   # CPMs; seconds until corr switched / DC2 decapsulates
        t.result()                                  # {"intact": True, ...}

The building blocks are shared by `make lab TOPO=vm-mobility` (run()) and
tests/e2e/test_vm_mobility.py.
"""
from __future__ import annotations

import json
import socket
import sys
import time
from typing import Callable

from ..runner import Lab
from . import control as cp

VM_EID = "10.9.0.5"
CORR = "10.1.0.2"
GATEWAY = "10.9.0.1"          # each DC's anycast gateway for the VM; the xTR (and hypervisor) address on the DC LAN
PORT = 5002
DCS = ("dc1", "dc2")


def start(lab: Lab) -> None:
    """VM attached to DC1 only; MS/MR, then the three xTRs; until all are registered."""
    lab.run("vm", ["ip", "link", "set", "eth2", "down"], check=True)
    cp.start_control_plane(lab, ("xtrc", "dc1", "dc2"))
    cp.wait_registered(lab, ("corr", "dc"), timeout=30)
    cp.eventually(lambda: len(dc_locators(lab)) == 2, 20, 0.2)


def dc_locators(lab: Lab) -> dict[str, int]:
    """The MS's merged view of the VM's /32: locator address -> priority."""
    site = cp.sites(lab)["dc"]
    return {l["address"]: l["priority"] for p in site["eid_prefixes"] for r in p["registrations"]
            for l in r["rlocs"] if r["eid"] == f"{VM_EID}/32"}


def corr_view(lab: Lab) -> dict[str, int]:
    """xtrc's map-cache entry for the VM: locator address -> priority."""
    e = cp.entry_for(cp.map_cache(lab, "xtrc"), VM_EID)
    return {r["address"]: r["priority"] for r in e["rlocs"]} if e else {}


def migrate(lab: Lab, to: str = "dc2") -> None:
    """The VM's memory is in DC `to` now: its NIC there up, the other down."""
    up, down = ("eth2", "eth1") if to == "dc2" else ("eth1", "eth2")
    for argv in (["ip", "link", "set", down, "down"], ["ip", "link", "set", up, "up"],
                 ["ip", "route", "replace", "default", "via", GATEWAY, "dev", up]):
        lab.run("vm", argv, check=True)


def cpm(lab: Lab, dc: str, priority: int, correspondents=()) -> dict:
    """`lispctl cpm` from DC `dc`'s hypervisor (on the DC LAN) to its xTR."""
    key = lab.rundir / f"hypervisor-{dc}.key"
    key.write_text(f"hypervisor-{dc}-secret\n")
    argv = [lab.expand(dc, "{python}"), "-m", "lispctl.cli", "cpm", GATEWAY, VM_EID, "--priority", str(priority),
            "--key-file", str(key), "--key-id", "1", "--json"]
    for c in correspondents:
        argv += ["-c", c]
    out = lab.run(dc, argv, timeout=30, check=True)
    return json.loads(out.stdout)


def decapsulated(lab: Lab, node: str) -> int:
    return int(cp.counters(lab, node)["datapath"]["decapsulated"])


RLOC = {"dc1": "203.0.113.1", "dc2": "203.0.113.129"}


def send_cpms(lab: Lab, to: str = "dc2", timeout: float = 10.0) -> dict:
    """The source DC's locators to 255, the destination's to 1 (with the
    VM's correspondent). Seconds from the second CPM until xtrc's map-cache
    prefers the destination ("switched") and until the destination xTR
    decapsulates correspondent traffic ("arrived"; includes the sender's TCP
    retransmission timer); None when not within timeout."""
    src = "dc1" if to == "dc2" else "dc2"
    cpm(lab, src, 255)
    before = decapsulated(lab, to)
    # from the moment the CLI sent it (its timestamp; same host clock), not
    # from our start of the CLI process (a second of Python start-up)
    t0 = cpm(lab, to, 1, [CORR])["timestamp_ms"] / 1000.0
    out: dict = {"switched": None, "arrived": None}
    deadline = t0 + timeout
    while time.time() < deadline and None in out.values():
        now = time.time() - t0
        if out["switched"] is None and corr_view(lab).get(RLOC[to]) == 1 and corr_view(lab).get(RLOC[src]) == 255:
            out["switched"] = now
        if out["arrived"] is None and decapsulated(lab, to) > before:
            out["arrived"] = now
        time.sleep(0.005)
    return out


class Trickle:
    """A TCP session corr -> VM that sends a little every 10 ms while it is open."""

    def __init__(self, lab: Lab, seconds: float = 6.0) -> None:
        self.lab, self.seconds = lab, seconds

    def __enter__(self) -> "Trickle":
        if ("vm", "sink") not in self.lab.procs:
            self.lab.start("vm", "sink", [self.lab.expand("vm", "{python}"), "-m", "lispctl.lab.traffic", "sink",
                                          str(PORT)], ready="ready", timeout=15)
        self.proc = self.lab.start("corr", "trickle", [self.lab.expand("corr", "{python}"), "-m", __name__,
                                                       "trickle", VM_EID, str(PORT), str(self.seconds)],
                                   ready="ready", timeout=20)
        return self

    def __exit__(self, *exc) -> None:
        pass

    def result(self, timeout: float = 60.0) -> dict:
        """Wait for the sender to finish; its report (sent, intact, seconds)."""
        try:
            self.proc.popen.wait(timeout)
        except Exception:
            self.lab.stop("corr", "trickle")
        lines = [l for l in self.proc.output().splitlines() if l.startswith("{")]
        return json.loads(lines[-1]) if lines else {"intact": False, "error": self.proc.output()[-2000:]}


def trickle(dst: str, port: int, seconds: float) -> dict:
    """Connect, say ready, send 1 KiB every 10 ms for `seconds`, then check the sink's digest."""
    import hashlib
    import os
    h, sent = hashlib.sha256(), 0
    t0 = time.monotonic()
    with socket.create_connection((dst, port), timeout=30) as s:
        print("ready", flush=True)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            block = os.urandom(1024)
            s.sendall(block)
            h.update(block)
            sent += len(block)
            time.sleep(0.01)
        s.shutdown(socket.SHUT_WR)
        reply = b""
        while len(reply) < 64:
            part = s.recv(64 - len(reply))
            if not part:
                break
            reply += part
    return {"sent": sent, "seconds": round(time.monotonic() - t0, 3), "intact": reply.decode() == h.hexdigest()}


# -- the demonstration --------------------------------------------------------------
def run(lab: Lab, say: Callable[[str], None]) -> bool:
    say("\n[2/7] Starting msmr (MS+MR), xtrc (the correspondent's site), dc1 and dc2 (the VM's two data centres)")
    start(lab)
    say(f"      registered; the MS merges the VM's /32: {dc_locators(lab)} (priority per locator)")
    say(f"\n[3/7] A TCP session from corr ({CORR}) to the VM ({VM_EID}) in DC1, 8 s of trickling data")
    ok = True
    with Trickle(lab, seconds=8.0) as t:
        cp.eventually(lambda: decapsulated(lab, "dc1") > 0, 10, 0.05)
        say(f"      dc1 decapsulates it: {decapsulated(lab, 'dc1')} packets so far")
        time.sleep(1.0)
        say("\n[4/7] Migrating the VM: its NIC in DC1 goes down, its NIC in DC2 comes up (same EID, same gateway)")
        migrate(lab)
        say("\n[5/7] The hypervisors send Change-Priority Messages: dc1 -> 255, dc2 -> 1 with correspondent "
            f"{CORR} (lispctl cpm)")
        took = send_cpms(lab)
        if None in took.values():
            say(f"      FAILED within 10 s: {took}")
            ok = False
        else:
            say(f"      xtrc's map-cache prefers dc2 {took['switched'] * 1000:.0f} ms after dc2's CPM; "
                f"correspondent traffic reached dc2 after {took['arrived'] * 1000:.0f} ms "
                "(TCP retransmits on its own timer)")
        say(f"      xtrc's map-cache for the VM: {corr_view(lab)}")
        say(f"      MS now: {dc_locators(lab)}")
        res = t.result()
    say(f"\n[6/7] The TCP session: {res}")
    ok = ok and bool(res.get("intact"))
    for dc in DCS:
        c = cp.counters(lab, dc)["roles"].get("cpm", {})
        say(f"      {dc} cpm counters: {c}")
    say("\n[7/7] Done")
    return ok


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "trickle":
        print(json.dumps(trickle(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))), flush=True)
    else:
        sys.exit(f"usage: python -m {__name__} trickle DST PORT SECONDS")
