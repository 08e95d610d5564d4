"""The `ddt` topology: resolution through a LISP-DDT tree (RFC 8111).

`run(lab, say)` is the `make lab TOPO=ddt` demonstration; the functions
before it are what tests/e2e/test_ddt.py uses:

    with Lab(load("ddt")) as lab:
        start_ddt(lab)                    # tree + Map-Servers + DDT MR, then the xTRs
        wait_registered(lab)
        mr_state(lab)["referral_cache"]   # the DDT Map-Resolver's referral cache
"""
from __future__ import annotations

import json
from typing import Callable

from .. import dataplane as dp
from ..procs import ProcessError
from ..runner import Lab
from . import control as cp

INFRA = ("root", "ddt1", "ddt2", "ms1", "ms2", "ms3", "mr")
XTRS = ("xtr1", "xtr2", "xtr3")
MR_ADDR = "172.16.20.2"
HOST = {"hostA": "10.1.0.2", "hostB": "10.2.0.2", "hostC": "10.3.0.2"}


def start_ddt(lab: Lab, xtrs=XTRS) -> None:
    """Every DDT node, Map-Server, the MR and the xTRs, all at once (an xTR
    compiles its BPF programs for seconds; its first Map-Register is retried
    if its Map-Server is not up yet)."""
    for n in (*INFRA, *xtrs):
        cp.start_node(lab, n, wait=False)
    for n in (*INFRA, *xtrs):
        cp.wait_node(lab, n)


def register_site(lab: Lab, k: int) -> None:
    """Register site k's 10.k.0.0/24 with ms k from xtrk's namespace, with the
    P bit (the Map-Server answers for it): a site without an xTR daemon."""
    register_proxied(lab, f"xtr{k}", f"172.16.1{k}.2", f"10.{k}.0.0/24", f"site{k}-secret", f"172.16.3{k}.2")


def register_proxied(lab: Lab, node: str, ms: str, prefix: str, key: str, rloc: str,
                     timeout: float = 5.0) -> None:
    """One signed Map-Register (key-id 1, P and M bits) for prefix -> rloc
    from node's namespace, repeated until the Map-Server's Map-Notify."""
    if not lab.call(node, _register_here, ms, prefix, key, rloc, timeout):
        raise ProcessError(f"{ms} did not acknowledge the Map-Register for {prefix}")


def _register_here(ms: str, prefix: str, key: str, rloc: str, timeout: float) -> bool:
    import ipaddress
    import select
    import socket
    import time

    from lispctl import wire as w
    net = ipaddress.ip_network(prefix)
    rec = w.EidRecord(net.network_address, net.prefixlen,
                      (w.LocatorRecord(ipaddress.ip_address(rloc), 1, 100),), 1440, 0, True)
    msg = w.sign(w.MapRegister(1, (rec,), 1, w.ALG_HMAC_SHA256, proxy_reply=True, want_map_notify=True), key)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((rloc, 0))
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            s.sendto(msg, (ms, 4342))
            if select.select([s], [], [], 0.5)[0] and s.recv(2048)[0] >> 4 == 4:
                return True
    return False


def wait_registered(lab: Lab, sites=(1, 2, 3), timeout: float = 20.0) -> None:
    def done():
        for k in sites:
            s = cp.api(lab, f"ms{k}", "sites")
            if not all(p["registered"] for site in s for p in site["eid_prefixes"]):
                return False
        return True
    if not cp.eventually(done, timeout, 0.2):
        raise ProcessError(f"sites {sites} not registered within {timeout:.0f} s")


def role_counters(lab: Lab, node: str, role: str) -> dict:
    return cp.counters(lab, node)["roles"].get(role, {})


def mr_state(lab: Lab) -> dict:
    return cp.api(lab, "mr", "status")["state"]["mr"]


def lig(lab: Lab, node: str, eid: str, timeout: float = 1.5, count: int = 2) -> dict | None:
    """One lookup through the DDT Map-Resolver from a node; the reply, or None."""
    out = lab.run(node, [lab.expand(node, "{python}"), "-m", "lispctl.cli", "lig", eid, "--mr", MR_ADDR,
                         "--json", "--timeout", str(timeout), "--count", str(count)], timeout=30)
    if out.returncode != 0:
        return None
    return json.loads(out.stdout)


def run(lab: Lab, say: Callable[[str], None]) -> bool:
    ok = True
    say("\n[2/7] Starting the tree (root, ddt1, ddt2), the Map-Servers ms1-3 and the DDT Map-Resolver mr,")
    say("      then xtr1-3 (each registers with its own Map-Server)")
    with dp.capture(lab, "router", "rmr", "udp port 4342") as pcap:
        try:
            start_ddt(lab)
            wait_registered(lab)
        except ProcessError as exc:
            say(f"      {exc}")
            return False
        say("      all three sites registered")

        say("\n[3/7] hostA -> hostB: xtr1 misses, asks mr; mr walks root -> ddt1 -> ms2 (NODE-REFERRAL,")
        say("      MS-REFERRAL, MS-ACK) and ms2 hands the request to xtr2, which answers xtr1")
        got = cp.ping(lab, "hostA", HOST["hostB"], count=5, timeout=1.0)
        say(f"      ping hostA -> hostB: {got}/5 replies (the first packets go while the mapping is learnt)")
        ok &= got >= 3
        got = cp.ping(lab, "hostA", HOST["hostC"], count=5, timeout=1.0)
        say(f"      ping hostA -> hostC: {got}/5 replies (through root -> ddt2 -> ms3)")
        ok &= got >= 3
        mr = mr_state(lab)
        say("      mr's referral cache:")
        for e in mr["referral_cache"]:
            say(f"        {e['eid']:<14} {e['type']:<16} -> {', '.join(e['referrals']) or '-':<14} "
                f"TTL {e['ttl_min']} min, {e['hits']} hits")

        say("\n[4/7] The referral cache takes over: lookups in the same branches skip the root and ddt1")
        before = role_counters(lab, "root", "ddt-node").get("ddt_map_request_rx", 0)
        for node, eid in (("xtr2", "10.1.0.2"), ("xtr3", "10.2.0.2")):
            r = lig(lab, node, eid)
            say(f"      lig {eid} from {node}: {'answered' if r else 'NO ANSWER'}")
            ok &= r is not None
        after = role_counters(lab, "root", "ddt-node").get("ddt_map_request_rx", 0)
        c = role_counters(lab, "mr", "mr")
        say(f"      root saw {after - before} new DDT Map-Requests; mr: {c.get('referral_cache_hit', 0)} cache hits, "
            f"{c.get('referral_cache_miss', 0)} misses, {c.get('resolved', 0)} resolved")
        ok &= after == before

        say("\n[5/7] A hole in the tree: 10.4.0.9 is inside root's 10.0.0.0/8 but delegated to nobody")
        r = lig(lab, "xtr1", "10.4.0.9")
        rec = (r or {}).get("records", [{}])[0] if r else {}
        say(f"      lig 10.4.0.9: {json.dumps(rec)[:160] if r else 'NO ANSWER'}")
        ok &= r is not None

        say("\n[6/7] ms3 goes down: site3 cannot be resolved any more, sites 1 and 2 are unaffected")
        cp.stop_node(lab, "ms3")
        got_c = cp.ping(lab, "hostB", HOST["hostC"], count=3, timeout=1.0)
        got_a = cp.ping(lab, "hostB", HOST["hostA"], count=5, timeout=1.0)
        say(f"      ping hostB -> hostC (xtr2 never learnt site3): {got_c}/3 replies")
        say(f"      ping hostB -> hostA: {got_a}/5 replies")
        ok &= got_c == 0 and got_a >= 3
        c = role_counters(lab, "mr", "mr")
        say(f"      mr: {c.get('ddt_request_timeout', 0)} DDT Map-Requests timed out, "
            f"{c.get('resolution_failed', 0)} resolutions given up")

    say("\n[7/7] DDT messages at mr, as tshark decodes them (router:rmr)")
    try:
        rows = cp._decoded_control(pcap, limit=12)
        for row in rows:
            say("      " + row)
        ok &= any("Referral" in r for r in rows)
    except Exception as exc:
        say(f"      tshark: {exc}")
    return ok
