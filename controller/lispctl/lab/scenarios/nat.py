"""The `nat` topology: an xTR behind an nftables masquerade NAT (docs/nat.md).

`run(lab, say)` is the `make lab TOPO=nat` demonstration; the end-to-end
test (tests/e2e/test_nat.py) uses the same building blocks:

    with Lab(load("nat")) as lab:
        start(lab)                                  # NAT rules, msmr, then mn
        st = wait_nat_state(lab, "192.168.1.10", "nat")
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


DATA_PORT_MAPPED = 40341


def map_data_port(lab: Lab) -> None:
    """Endpoint-independent mapping for mn's port 4341, as the draft assumes
    (and many home NATs do): whatever the destination, mn:4341 leaves as
    NAT_PUBLIC:40341, so the binding the RTR learns from the ECM'd
    Map-Register (to its port 4342) is the one data (to its 4341) uses. The
    random masquerade stays for everything else. Existing bindings are
    flushed so the next keepalive takes the new mapping."""
    r = lab.run("nat", ["nft", "insert", "rule", "ip", "labnat", "post", "oifname", "wan0",
                        "udp", "sport", "4341", "masquerade", "to", f":{DATA_PORT_MAPPED}"], timeout=10)
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


def rtr_peer(lab: Lab) -> dict | None:
    peers = cp.api(lab, "rtr", "status")["state"]["rtr"]["peers"]
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


def run(lab: Lab, say: Callable[[str], None]) -> bool:
    say("\n[1/4] The home NAT: nftables masquerade on nat:wan0 "
        f"({PRIVATE_RLOC} leaves as {NAT_PUBLIC})")
    with dp.capture(lab, "msmr", "eth0", "udp port 4342") as ms_pcap, \
            dp.capture(lab, "rtr", "eth0", "udp") as rtr_pcap:
        try:
            say("[2/4] `lispctl up` on msmr (offers RTR 192.0.2.130), then on mn ([nat] enabled)")
            start(lab)
        except ProcessError as exc:
            say(f"      a daemon did not start:\n{exc}")
            return False
        st = wait_nat_state(lab, PRIVATE_RLOC, "nat")
        say(f"[3/4] NAT detection by Info-Request/Info-Reply: $ lispctl status -i {lab.instance('mn')}")
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
    say("[4/4] What tshark read at the MS (Info-Request/Reply) and at the RTR (ECM'd Map-Register)")
    for pcap in (ms_pcap, rtr_pcap):
        for row in cp._decoded_control(pcap, limit=6):
            say("      " + row)
    say("      (data both ways through the RTR: tests/e2e/test_nat.py::test_data_both_ways_through_the_rtr)")
    return ok
