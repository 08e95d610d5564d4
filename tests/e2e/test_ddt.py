"""LISP-DDT end to end in the `ddt` namespace lab: real `lispctl up` daemons
for a root and two DDT nodes, three Map-Servers, a DDT Map-Resolver and two
xTRs with BPF data planes (site 3 registers from a plain socket with the P
bit: its Map-Server answers for it, which keeps the module under a minute).
One lab for the module; tests run in file order (the last one takes a
Map-Server down)."""
from __future__ import annotations

import pytest

import subprocess

from lispctl.lab import Lab, load
from lispctl.lab import dataplane as dp
from lispctl.lab.scenarios import control as cp
from lispctl.lab.scenarios import ddt
from tests.conftest import need_root

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def lab():
    need_root()
    with Lab(load("ddt")) as lab:
        ddt.start_ddt(lab, xtrs=("xtr1", "xtr2"))
        ddt.wait_registered(lab, sites=(1, 2))
        yield lab


def _mr(lab) -> dict:
    return ddt.role_counters(lab, "mr", "mr")


def _rx(lab, node, role) -> int:
    return ddt.role_counters(lab, node, role).get("ddt_map_request_rx", 0)


def _tshark_rows(pcap) -> list[tuple[str, ...]]:
    out = subprocess.run(["tshark", "-r", str(pcap), "-n", "-Y", "lisp", "-T", "fields", "-E", "separator=|",
                          "-e", "ip.src", "-e", "ip.dst", "-e", "lisp.type", "-e", "lisp.ecm.flags.ddt",
                          "-e", "lisp.mapping.act", "-e", "lisp.referral.incomplete"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return [tuple(line.split("|")) for line in out.splitlines()]


def test_resolution_walks_the_tree(lab):
    with dp.capture(lab, "router", "rmr", "udp port 4342") as pcap:
        got = cp.ping(lab, "hostA", ddt.HOST["hostB"], count=5, timeout=1.0)
    assert got >= 3, cp.log_tail(lab, "mr")
    # tshark reads our DDT Map-Requests (D bit) and Map-Referrals (ACT, I bit) without complaint
    assert not [p for layers in dp.tshark_json(pcap) for p in dp.expert_problems(layers)]
    rows = _tshark_rows(pcap)
    referrals = sorted((src.split(",")[0], act, inc) for src, _, typ, _, act, inc in rows if typ == "6")
    assert referrals == sorted([("172.16.1.2", "0", "0"), ("172.16.2.2", "1", "0"), ("172.16.12.2", "2", "1"),
                                ("172.16.1.2", "0", "0"), ("172.16.2.2", "1", "0"), ("172.16.11.2", "2", "1")])
    ddt_requests = [r for r in rows if r[2].startswith("8") and r[1].split(",")[0] != ddt.MR_ADDR]
    assert len(ddt_requests) == 6 and all(r[3] in ("1", "True") for r in ddt_requests), rows
    assert cp.eventually(lambda: "10.2.0.0/24" in cp.map_cache(lab, "xtr1"), 5)
    # xtr1 -> hostB: root -> ddt1 -> ms2; the reply's way back (xtr2 -> hostA):
    # root -> ddt1 -> ms1; each asked once, the other branch never
    assert _rx(lab, "root", "ddt-node") == 2 and _rx(lab, "ddt1", "ddt-node") == 2
    assert _rx(lab, "ms2", "ms") == 1 and _rx(lab, "ms1", "ms") == 1
    assert _rx(lab, "ddt2", "ddt-node") == 0 and _rx(lab, "ms3", "ms") == 0
    assert ddt.role_counters(lab, "ms2", "ms").get("map_referral_tx_ms_ack") == 1
    cache = {e["eid"]: e for e in ddt.mr_state(lab)["referral_cache"]}
    assert cache["10.2.0.0/16"]["type"] == "node-referral" and cache["10.2.0.0/16"]["referrals"] == ["172.16.2.2"]
    assert cache["10.2.0.0/24"]["type"] == "ms-referral" and cache["10.2.0.0/24"]["referrals"] == ["172.16.12.2"]


def test_referral_cache_takes_over(lab):
    root, node = _rx(lab, "root", "ddt-node"), _rx(lab, "ddt1", "ddt-node")
    reply = ddt.lig(lab, "xtr3", "10.2.0.99")
    assert reply is not None and reply["records"][0]["eid"] == "10.2.0.0/24"
    assert [l["address"] for l in reply["records"][0]["locators"]] == ["172.16.32.2"]
    assert (_rx(lab, "root", "ddt-node"), _rx(lab, "ddt1", "ddt-node")) == (root, node)
    assert _mr(lab)["referral_cache_hit"] >= 1


def test_delegation_hole_is_a_negative_reply(lab):
    reply = ddt.lig(lab, "xtr1", "10.4.0.9")
    assert reply is not None
    (rec,) = reply["records"]
    assert (rec["eid"], rec["action"], rec["ttl_minutes"], rec["locators"]) == \
        ("10.4.0.0/14", "natively-forward", 15, [])


def test_map_server_down_only_its_sites(lab):
    ddt.register_site(lab, 3)
    assert ddt.lig(lab, "xtr2", "10.3.0.2") is not None         # fine while ms3 runs
    cp.stop_node(lab, "ms3")
    failed = _mr(lab).get("resolution_failed", 0)
    assert ddt.lig(lab, "xtr2", "10.3.0.7", timeout=1.0, count=1) is None
    assert cp.eventually(lambda: _mr(lab).get("resolution_failed", 0) > failed, 5)
    assert ddt.lig(lab, "xtr3", "10.1.0.2") is not None
    assert cp.ping(lab, "hostB", ddt.HOST["hostA"], count=3, timeout=1.0) >= 2
