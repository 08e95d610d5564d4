"""The `nat` topology: an xTR and a mobile node behind an nftables
masquerade NAT (docs/nat.md).

`run(lab, say)` is the `make lab TOPO=nat` demonstration; the end-to-end
tests (tests/e2e/test_nat.py, test_nat_handover.py) and bench_nat_handover
use the same building blocks:

    with Lab(load("nat")) as lab:
        start(lab)                                  # NAT rules, msmr, rtr, then mn
        st = wait_nat_state(lab, "192.168.1.10", "nat")

    with Lab(load("nat")) as lab:
        start_mobile(lab)                           # NAT rules, msmr, rtr, pub, mob
        set_home(lab, False)                        # carrier loss on mob's NATed uplink
        wait_mob_locator(lab, MOB_PUBLIC)           # pub now sends to mob's public RLOC
"""
from __future__ import annotations

from typing import Any, Callable

from .. import dataplane as dp
from ..procs import ProcessError
from ..runner import Lab
from . import control as cp

PRIVATE_RLOC = "192.168.1.10"      # mn's uplink address (behind the NAT)
NAT_PUBLIC = "198.51.100.2"        # the NAT's outside address
RTR_RLOC = "192.0.2.130"           # offered by the MS in Info-Replies
MS_ADDR = "192.0.2.10"


def nat_rules(lab: Lab) -> None:
    """A NAT: masquerade everything leaving wan0 (nftables, own table), with
    random ports as carrier-grade NATs do, so every new binding shows."""
    script = ("table ip labnat {\n"
              " chain post { type nat hook postrouting priority srcnat; policy accept;\n"
              '  oifname "wan0" masquerade random\n }\n}\n')
    r = lab.run("nat", ["nft", "-f", "-"], input=script, timeout=10)
    if r.returncode != 0:
        raise ProcessError(f"nft failed: {r.stderr}")


# the mobile node mob: EID on lmn0, home0 behind the NAT (preferred), pub0 public
MOB, CORR, CORR_HOST = "mob", "pub", "hostP"
MOB_EID = "10.7.0.7"
MOB_HOME = "192.168.2.10"
MOB_PUBLIC = "198.18.0.10"
MOB_DATA_PORT_MAPPED = 40342
CORR_HOST_EID = "10.5.0.2"


def map_data_port(lab: Lab, source: str, port: int) -> None:
    """Endpoint-independent mapping for a node's port 4341, as the draft
    assumes (and many home NATs do): whatever the destination, source:4341
    leaves as NAT_PUBLIC:port. The mobile node's part of the lab uses it, so
    the lab has both NAT types (mn sits behind the plain random masquerade).
    Filtering stays conntrack's (by address and port): the RTR's data still
    needs the binding the node's data keepalive opens towards the RTR's
    4341. The random masquerade stays for everything else. Existing
    bindings are flushed so the next keepalive takes the new mapping."""
    r = lab.run("nat", ["nft", "insert", "rule", "ip", "labnat", "post", "oifname", "wan0", "ip", "saddr", source,
                        "udp", "sport", "4341", "masquerade", "to", f":{port}"], timeout=10)
    if r.returncode != 0:
        raise ProcessError(f"nft failed: {r.stderr}")
    flush_conntrack(lab)


def _flush_here() -> int:
    from pyroute2 import Conntrack
    with Conntrack() as ct:
        n = sum(1 for _ in ct.dump_entries())
        ct.flush()
    return n


def flush_conntrack(lab: Lab) -> int:
    """A NAT reboot: every binding of the nat node forgotten; returns how many there were."""
    return lab.call("nat", _flush_here)


def rtr_peer(lab: Lab, xtr_id: str | None = None) -> dict | None:
    peers = cp.api(lab, "rtr", "status")["state"]["rtr"]["peers"]
    if xtr_id is not None:
        peers = [p for p in peers if p["xtr_id"] == xtr_id]
    return peers[0] if peers else None


def start(lab: Lab) -> None:
    nat_rules(lab)
    cp.start_node(lab, "msmr")
    cp.start_node(lab, "rtr")
    cp.start_node(lab, "mn")


def nat_state(lab: Lab, rloc: str = PRIVATE_RLOC, node: str = "mn") -> dict | None:
    snap = cp.api(lab, node, "status")["state"].get("nat") or {}
    return next((r for r in snap.get("rlocs", []) if r["rloc"] == rloc), None)


def wait_nat_state(lab: Lab, rloc: str, state: str, timeout: float = 15.0,
                   node: str = "mn") -> dict | None:
    def ok() -> Any:
        r = nat_state(lab, rloc, node)
        return r if r is not None and r["state"] == state else None
    return cp.eventually(ok, timeout)


# -- the mobile node with a NATed and a public uplink ----------------------------------
MOB_XTR_ID = "00000000000000000000000000000a07"


def start_mobile(lab: Lab) -> None:
    """Everything around mob (start_mobile_peers), then mob itself (start_mob)."""
    start_mobile_peers(lab)
    start_mob(lab)


def start_mobile_peers(lab: Lab) -> None:
    """NAT rules with mob:4341 mapped endpoint-independently (as the draft
    assumes; mn stays behind the plain random masquerade), msmr, rtr and pub
    (those not running yet)."""
    if (MSMR_NODE, cp.DAEMON) not in lab.procs:
        nat_rules(lab)
        cp.start_node(lab, MSMR_NODE)
    map_data_port(lab, MOB_HOME, MOB_DATA_PORT_MAPPED)
    started = [n for n in ("rtr", CORR) if (n, cp.DAEMON) not in lab.procs]
    for node in started:
        cp.start_node(lab, node, wait=False)
    for node in started:
        cp.wait_node(lab, node)


def start_mob(lab: Lab) -> None:
    """`lispctl up` on mob; until it is registered through the RTR with its
    public RLOC as second locator."""
    cp.start_node(lab, MOB)
    if not wait_mob_registered(lab, [RTR_RLOC, MOB_PUBLIC], timeout=20):
        raise ProcessError(f"mob not registered through the RTR: {mob_registration(lab)}\n"
                           f"{cp.log_tail(lab, MOB)}")


MSMR_NODE = "msmr"


def mob_registration(lab: Lab) -> dict | None:
    """The MS's registration of mob's EID: {"rlocs": [...], "source": ...}."""
    regs = cp.sites(lab)["mob"]["eid_prefixes"][0]["registrations"]
    return regs[0] if regs else None


def _usable(rlocs: list[dict]) -> list[str]:
    ok = [r for r in rlocs if r.get("reachable", True) and r["priority"] != 255]
    best = min((r["priority"] for r in ok), default=None)
    return sorted(r["address"] for r in ok if r["priority"] == best)


def wait_mob_registered(lab: Lab, rlocs: list[str], timeout: float = 10.0) -> dict | None:
    """Until the MS holds mob's EID with exactly these reachable locators."""
    want = sorted(rlocs)

    def ok() -> Any:
        reg = mob_registration(lab)
        got = sorted(r["address"] for r in reg["rlocs"] if r.get("reachable", True)) if reg else None
        return reg if got == want else None
    return cp.eventually(ok, timeout, 0.05)


def mob_entry(lab: Lab) -> dict | None:
    """pub's map-cache entry for mob's EID."""
    return cp.entry_for(cp.map_cache(lab, CORR), MOB_EID)


def wait_mob_locator(lab: Lab, address: str, timeout: float = 10.0) -> dict | None:
    """Until pub sends to mob's EID through `address` only (best priority, reachable)."""
    def ok() -> Any:
        e = mob_entry(lab)
        return e if e and _usable(e["rlocs"]) == [address] else None
    return cp.eventually(ok, timeout, 0.02)


def set_home(lab: Lab, up: bool) -> float:
    """Carrier loss/return on mob's NATed uplink home0: the NAT's end (lan1)
    goes down/up, as when the home Wi-Fi is out of reach. Returns
    time.monotonic() just before."""
    import time
    with lab.ipr("nat") as ipr:
        idx = ipr.link_lookup(ifname="lan1")[0]
        t = time.monotonic()
        ipr.link("set", index=idx, state="up" if up else "down")
    return t


class MobStream:
    """A long-lived TCP connection hostP -> mob's EID sending continuously
    (the mobile lab's tcp-stream/tcp-sink tools: one connection, a reset or
    error ends it and shows in their state files)."""

    def __init__(self, lab: Lab, port: int = 5202, tag: str = "mobtcp") -> None:
        from pathlib import Path

        from . import mobile as m
        self.lab, self.tag, self._m = lab, tag, m
        self.sink_state = str(lab.rundir / f"{tag}-sink.json")
        self.src_state = str(lab.rundir / f"{tag}-stream.json")
        for p in (self.sink_state, self.src_state):
            Path(p).unlink(missing_ok=True)
        m.start_tool(lab, MOB, f"{tag}-sink", "tcp-sink", port, self.sink_state)
        m.start_tool(lab, CORR_HOST, f"{tag}-stream", "tcp-stream", MOB_EID, port, self.src_state)

    def sink(self) -> dict:
        return self._m.read_state(self.sink_state)

    def source(self) -> dict:
        return self._m.read_state(self.src_state)

    def received(self) -> int:
        return int(self.sink().get("bytes", 0))

    def broken(self) -> bool:
        return bool(self.sink().get("error") or self.sink().get("closed") or self.source().get("error"))

    def grows(self, timeout: float = 10.0, by: int = 20000) -> bool:
        """The same connection delivers `by` more bytes within timeout."""
        start = self.received()
        cp.eventually(lambda: self.received() >= start + by or self.broken(), timeout, 0.05)
        return self.received() >= start + by and not self.broken()

    def stop(self) -> dict:
        self.lab.stop(CORR_HOST, f"{self.tag}-stream")
        end = cp.eventually(lambda: self.sink().get("closed") or self.sink().get("error"), 10, 0.05)
        self.lab.stop(MOB, f"{self.tag}-sink")
        return {"sink": self.sink(), "source": self.source(),
                "closed_cleanly": bool(end) and not self.sink().get("error")}


def warm_up_mobile(lab: Lab, timeout: float = 15.0) -> bool:
    """Ping hostP -> mob's EID, then mob -> hostP, until both map-caches
    are resolved. The correspondent first: the lab NAT filters by address
    and port (conntrack), and the RTR's data reaches mob through the binding
    mob's data keepalive opened towards the RTR's port 4341 (docs/nat.md)."""
    return bool(cp.eventually(lambda: cp.ping(lab, CORR_HOST, MOB_EID, count=1, timeout=0.3), timeout, 0.05)
                and cp.eventually(lambda: cp.ping(lab, MOB, CORR_HOST_EID, count=1, timeout=0.3), timeout, 0.05))


def run_mobile(lab: Lab, say: Callable[[str], None]) -> bool:
    """The mobile node part of the demonstration: handover NATed -> public -> NATed."""
    say(f"\n[5/6] The mobile node mob: home0 {MOB_HOME} behind the NAT (priority 1), "
        f"pub0 {MOB_PUBLIC} public (priority 2)")
    try:
        start_mobile(lab)
    except ProcessError as exc:
        say(f"      failed: {exc}")
        return False
    st = wait_nat_state(lab, MOB_HOME, "nat", node=MOB)
    pub = wait_nat_state(lab, MOB_PUBLIC, "public", node=MOB)
    say(f"      home0: {st['state'] if st else '?'} seen as {st['translated'] if st else '?'}, RTR "
        f"{st['rtr'] if st else '?'}; pub0: {pub['state'] if pub else '?'}")
    ok = st is not None and pub is not None and warm_up_mobile(lab)
    reg = mob_registration(lab)
    say(f"      the MS holds {MOB_EID} -> " + ", ".join(
        f"{r['address']} (priority {r['priority']})" for r in (reg or {}).get("rlocs", []))
        + f", registered through {reg['source'] if reg else '?'}")
    tcp = MobStream(lab)
    before = dp.counters(lab, "rtr")["reencapsulated"]
    ok &= tcp.grows(10)
    e = wait_mob_locator(lab, RTR_RLOC)
    say(f"      a TCP stream hostP -> {MOB_EID}: pub sends via {_usable(e['rlocs']) if e else '?'} "
        f"(the RTR), the RTR on to the NAT's {NAT_PUBLIC}:{MOB_DATA_PORT_MAPPED}, mob's acknowledgements "
        f"back from home0 through the RTR ({dp.counters(lab, 'rtr')['reencapsulated'] - before} packets "
        "re-encapsulated)")
    say("      handover 1: home0 loses its carrier (the NAT's lan1 goes down)")
    import time
    t0 = set_home(lab, False)
    e = wait_mob_locator(lab, MOB_PUBLIC)
    dt = (time.monotonic() - t0) * 1000
    ok &= bool(e) and tcp.grows(10)
    say(f"      pub now sends to {_usable(e['rlocs']) if e else '?'} directly ({dt:.0f} ms); "
        f"stream: {tcp.received()} bytes, {'no reset' if not tcp.broken() else 'BROKEN'}")
    say("      handover 2: home0 comes back: Info-Request, NAT found again, registered through the RTR")
    t0 = set_home(lab, True)
    e = wait_mob_locator(lab, RTR_RLOC)
    dt = (time.monotonic() - t0) * 1000
    ok &= bool(e) and tcp.grows(10)
    say(f"      pub sends via the RTR again ({dt:.0f} ms); stream: {tcp.received()} bytes, "
        f"{'no reset' if not tcp.broken() else 'BROKEN'}")
    res = tcp.stop()
    ok &= res["closed_cleanly"]
    say(f"      the same TCP connection survived both handovers: {res['closed_cleanly']}")
    say(f"      $ lispctl status -i {lab.instance(MOB)}")
    cp._show(say, cp.cli(lab, MOB, "status"))
    return ok


def run(lab: Lab, say: Callable[[str], None]) -> bool:
    say("\n[1/6] The home NAT: nftables masquerade on nat:wan0 "
        f"({PRIVATE_RLOC} leaves as {NAT_PUBLIC})")
    with dp.capture(lab, "msmr", "eth0", "udp port 4342") as ms_pcap, \
            dp.capture(lab, "rtr", "eth0", "udp") as rtr_pcap:
        try:
            say("[2/6] `lispctl up` on msmr (offers RTR 192.0.2.130), then on mn ([nat] enabled)")
            start(lab)
        except ProcessError as exc:
            say(f"      a daemon did not start:\n{exc}")
            return False
        st = wait_nat_state(lab, PRIVATE_RLOC, "nat")
        say(f"[3/6] NAT detection by Info-Request/Info-Reply: $ lispctl status -i {lab.instance('mn')}")
        cp._show(say, cp.cli(lab, "mn", "status"))
        ok = st is not None and st["translated"].startswith(NAT_PUBLIC + ":") and st["rtr"] == RTR_RLOC
        # the ECM'd Map-Register goes to the RTR, which relays the MS's Map-Notify back
        ok &= bool(cp.eventually(
            lambda: cp.counters(lab, "mn")["roles"].get("nat", {}).get("map_notify_via_rtr_rx"), 10))
        say(f"      $ lispctl sites -i {lab.instance('msmr')}      (on msmr: the RTR is mn's locator)")
        cp._show(say, cp.cli(lab, "msmr", "sites"))
        say(f"      $ lispctl status -i {lab.instance('rtr')}      (on rtr: its NATed peers)")
        cp._show(say, cp.cli(lab, "rtr", "status"))
        ok &= bool(cp.api(lab, "rtr", "status")["state"]["rtr"]["peers"])
        say("      pub, an xTR with [nat] enabled on a public address, finds no NAT and registers itself:")
        cp.start_node(lab, "pub")
        st = wait_nat_state(lab, "203.0.113.10", "public", node="pub")
        say(f"      pub 203.0.113.10: {st['state'] if st else 'no answer'}")
        ok &= st is not None
    say("[4/6] What tshark read at the MS (Info-Request/Reply) and at the RTR (ECM'd Map-Register)")
    for pcap in (ms_pcap, rtr_pcap):
        for row in cp._decoded_control(pcap, limit=6):
            say("      " + row)
    say("      (data both ways through the RTR: tests/e2e/test_nat.py::test_data_both_ways_through_the_rtr)")
    ok &= run_mobile(lab, say)
    say("\n[6/6] tests/e2e/test_nat_handover.py checks the same with tshark; "
        "bench_nat_handover measures the handovers")
    return ok
