"""The control plane end to end in the `control` namespace lab: real
`lispctl up` daemons (MS/MR on msmr, xTRs on xtr1/xtr2, the wrong-key ETR on
xtr3), real BPF data planes, real clocks.

One lab serves the whole module (an xTR compiles its BPF programs for
seconds). The tests run in file order and each leaves the lab working; the
last one (TTL expiry) relies on entries the earlier ones created and on the
time they took, so it waits only for what is left of the 1-minute TTLs.
"""
from __future__ import annotations

import ipaddress
import json

import pytest

from lispctl.lab import Lab, load
from lispctl.lab.scenarios import control as cp
from tests.conftest import need_root

pytestmark = pytest.mark.root

A4, A6, B4, B6 = "10.1.0.2", "fd00:1::2", "10.2.0.2", "fd00:2::2"
XTR1_RLOCS = ["198.51.100.1", "2001:db8:1::1"]
XTR2_RLOCS = ["2001:db8:2::2", "203.0.113.2"]
NEW_RLOC = "203.0.113.3"              # added to xtr2's rloc0 in the SMR test
UNREGISTERED = "10.3.0.9"             # inside site3's configured 10.3.0.0/24 (xtr3's key is wrong)
NON_EID4, NON_EID6 = "10.99.0.1", "fd99::1"
CONFIGURED = [ipaddress.ip_network(p) for p in
              ("10.1.0.0/24", "fd00:1::/64", "10.2.0.0/24", "fd00:2::/64", "10.3.0.0/24", "fd00:3::/64")]


@pytest.fixture(scope="module")
def lab():
    need_root()
    with Lab(load("control")) as lab:
        cp.start_control_plane(lab)
        yield lab


def _lig(lab, node: str, eid: str) -> dict:
    out = lab.run(node, [lab.expand(node, "{python}"), "-m", "lispctl.cli", "lig", eid,
                         "--mr", cp.MSMR_ADDR, "--json", "--timeout", "1"], timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout)


def _locators(entry: dict) -> list[str]:
    return sorted(r["address"] for r in entry["rlocs"])


def _role(counters: dict, role: str) -> dict:
    return counters["roles"].get(role, {})


def test_both_sites_register_with_their_locators(lab):
    s = cp.wait_registered(lab, ("site1", "site2"))
    assert cp.registered_rlocs(s["site1"]) == {"10.1.0.0/24": XTR1_RLOCS, "fd00:1::/64": XTR1_RLOCS}
    assert cp.registered_rlocs(s["site2"]) == {"10.2.0.0/24": XTR2_RLOCS, "fd00:2::/64": XTR2_RLOCS}
    # the P bit of xtr1's registers, none from xtr2 (site2 answers its own requests)
    assert all(r["proxy_reply"] for p in s["site1"]["eid_prefixes"] for r in p["registrations"])
    assert not any(r["proxy_reply"] for p in s["site2"]["eid_prefixes"] for r in p["registrations"])
    # each xTR saw its Map-Notify (verified with the site key: SHA-256 for site1, SHA-1 for site2)
    for node in ("xtr1", "xtr2"):
        etr = cp.api(lab, node, "status")["state"]["etr"]
        assert etr["map_servers"][0]["registered"] is True, etr
        assert _role(cp.counters(lab, node), "etr").get("map_notify_bad", 0) == 0
    # lig through the MR: forwarded to xtr2's ETR, which answers itself
    res = _lig(lab, "xtr1", B4)
    assert res["reply_from"] == "203.0.113.2"
    assert sorted(l["address"] for l in res["records"][0]["locators"]) == XTR2_RLOCS


@pytest.mark.parametrize("src,dst,prefix", [(A4, B4, "10.2.0.0/24"), (A6, B6, "fd00:2::/64")])
def test_first_packet_miss_resolves_and_later_packets_flow(lab, src, dst, prefix):
    assert cp.entry_for(cp.map_cache(lab, "xtr1"), dst) is None
    before = cp.counters(lab, "xtr1")
    got = cp.ping(lab, "hostA", dst, count=5, timeout=1.0)
    # miss-action drop, but the first request is held at xtr1 while it asks
    # and sent once the mapping is installed, the first reply likewise at xtr2
    # (it resolves hostA's site the same way): nothing is lost
    assert got == 5, got
    entry = cp.map_cache(lab, "xtr1")[prefix]
    assert _locators(entry) == XTR2_RLOCS and entry["action"] == "no-action"
    assert entry["ttl_s"] == 60.0            # xtr2's record-ttl-minutes = 1
    after = cp.counters(lab, "xtr1")
    itr0, itr1 = _role(before, "itr"), _role(after, "itr")
    assert itr1["map_request_tx"] > itr0.get("map_request_tx", 0)
    assert itr1["map_reply_rx"] > itr0.get("map_reply_rx", 0)
    assert after["datapath"]["miss"] > before["datapath"]["miss"]
    d0, d1 = before["daemon"], after["daemon"]
    assert d1["held_sent"] > d0.get("held_sent", 0) and d1["held_now"] == 0
    assert after["datapath"]["encapsulated"] >= before["datapath"]["encapsulated"] + got - 1
    assert after["datapath"]["decapsulated"] >= before["datapath"]["decapsulated"] + got


def test_tcp_transfer_is_intact_both_families(lab):
    for dst in (B4, B6):
        r = cp.tcp_transfer(lab, "hostA", "hostB", dst, 512 * 1024)
        assert r["intact"] and r["sent"] == 512 * 1024


def test_negative_replies_non_eid_and_unregistered(lab):
    for dst in (NON_EID4, NON_EID6):
        assert cp.ping(lab, "hostA", dst, count=1, timeout=0.3) == 0
    assert cp.ping(lab, "hostA", UNREGISTERED, count=1, timeout=0.3) == 0

    def entries():
        cache = cp.map_cache(lab, "xtr1")
        found = [cp.entry_for(cache, a) for a in (NON_EID4, NON_EID6, UNREGISTERED)]
        return found if all(found) else None
    found = cp.eventually(entries, 5)
    assert found, cp.map_cache(lab, "xtr1")
    for e, addr in zip(found[:2], (NON_EID4, NON_EID6)):
        net = ipaddress.ip_network(e["prefix"])
        assert e["action"] == "natively-forward" and not e["rlocs"] and e["ttl_s"] == 15 * 60
        assert ipaddress.ip_address(addr) in net
        assert not any(net.overlaps(c) for c in CONFIGURED if c.version == net.version)
    unreg = found[2]
    assert unreg["prefix"] == "10.3.0.0/24" and not unreg["rlocs"]
    assert unreg["action"] == "send-map-request" and unreg["ttl_s"] == 60
    mr = _role(cp.counters(lab, "msmr"), "mr")
    assert mr["negative_reply_non_eid"] >= 2 and mr["negative_reply_unregistered"] >= 1


def test_proxy_reply_site_is_answered_by_the_ms(lab):
    # hostB's replies in the earlier tests made xtr2 resolve hostA's site; site1
    # registered with proxy-reply, so its ETR never saw a Map-Request.
    assert cp.ping(lab, "hostB", A4, count=2, timeout=1.0) == 2
    entry = cp.map_cache(lab, "xtr2")["10.1.0.0/24"]
    assert _locators(entry) == XTR1_RLOCS and entry["ttl_s"] == 1440 * 60
    etr1 = _role(cp.counters(lab, "xtr1"), "etr")
    assert etr1.get("map_reply_tx", 0) == 0 and etr1.get("map_request_forwarded_rx", 0) == 0
    assert _role(cp.counters(lab, "msmr"), "ms")["proxy_map_reply_tx"] >= 2
    res = _lig(lab, "xtr2", A4)
    assert res["reply_from"] == cp.MSMR_ADDR
    assert sorted(l["address"] for l in res["records"][0]["locators"]) == XTR1_RLOCS
    assert _role(cp.counters(lab, "xtr1"), "etr").get("map_reply_tx", 0) == 0


def test_wrong_key_is_rejected(lab):
    ms0 = _role(cp.counters(lab, "msmr"), "ms")
    cp.start_node(lab, "xtr3")
    try:
        # register-retry 1 s with back-off: a few attempts within seconds
        def rejected():
            ms = _role(cp.counters(lab, "msmr"), "ms")
            return ms if ms["map_register_bad_auth"] >= ms0.get("map_register_bad_auth", 0) + 2 else None
        ms1 = cp.eventually(rejected, 15, 0.2)
        assert ms1, cp.counters(lab, "msmr")
        etr3 = _role(cp.counters(lab, "xtr3"), "etr")
        status3 = cp.api(lab, "xtr3", "status")["state"]["etr"]["map_servers"][0]
    finally:
        assert cp.stop_node(lab, "xtr3") == 0
    site3 = cp.sites(lab)["site3"]
    assert not any(p["registered"] or p["registrations"] for p in site3["eid_prefixes"])
    assert site3["bad_auth"] >= 2
    assert etr3["map_register_tx"] >= 2 and etr3.get("map_notify_rx", 0) == 0
    assert status3["registered"] is False and status3["notifies"] == 0
    # every Map-Notify the MS sent in the meantime answered an accepted register
    assert (ms1["map_notify_tx"] - ms0["map_notify_tx"]) == (ms1["map_register_ok"] - ms0["map_register_ok"])


def test_locator_change_triggers_smr_and_xtr1_learns_it(lab):
    before = cp.counters(lab, "xtr1")
    with lab.ipr("xtr2") as ipr:
        idx = ipr.link_lookup(ifname="rloc0")[0]
        ipr.addr("add", index=idx, address=NEW_RLOC, prefixlen=24)
    try:
        def learnt():
            e = cp.map_cache(lab, "xtr1").get("10.2.0.0/24")
            return e if e and NEW_RLOC in _locators(e) else None
        entry = cp.eventually(learnt, 5)
        assert entry, (f"{cp.map_cache(lab, 'xtr1')}\n--- xtr2:\n{cp.log_tail(lab, 'xtr2')}"
                       f"\n--- xtr1:\n{cp.log_tail(lab, 'xtr1')}")
        assert _locators(entry) == sorted(XTR2_RLOCS + [NEW_RLOC])
        assert _role(cp.counters(lab, "xtr2"), "etr")["smr_tx"] >= 1
        itr = _role(cp.counters(lab, "xtr1"), "itr")
        assert itr["smr_rx"] > _role(before, "itr").get("smr_rx", 0)
        # the MS has the new locator set too (re-registered at once)
        assert NEW_RLOC in cp.registered_rlocs(cp.sites(lab)["site2"])["10.2.0.0/24"]
        # and traffic still flows, whichever locator a flow hashes to
        assert cp.tcp_transfer(lab, "hostA", "hostB", B4, 256 * 1024)["intact"]
    finally:
        with lab.ipr("xtr2") as ipr:
            ipr.addr("del", index=idx, address=NEW_RLOC, prefixlen=24)

    def forgotten():
        e = cp.map_cache(lab, "xtr1").get("10.2.0.0/24")
        return e if e and NEW_RLOC not in _locators(e) else None
    assert cp.eventually(forgotten, 5), cp.map_cache(lab, "xtr1")


def test_map_server_restart_xtrs_reregister_and_traffic_continues(lab):
    assert cp.stop_node(lab, "msmr") == 0
    # the mapping system is gone: cached mappings keep traffic flowing
    assert cp.ping(lab, "hostA", B4, count=3, timeout=1.0) == 3
    cp.start_node(lab, "msmr")
    assert not any(p["registered"] for s in cp.sites(lab).values() for p in s["eid_prefixes"])
    # the xTRs refresh every 10 s (register-interval): back within one interval
    s = cp.wait_registered(lab, ("site1", "site2"), timeout=15)
    assert cp.registered_rlocs(s["site2"])["10.2.0.0/24"] == XTR2_RLOCS
    assert cp.ping(lab, "hostA", B4, count=3, timeout=1.0) == 3
    res = _lig(lab, "xtr1", B4)          # and the new MS resolves again
    assert res["reply_from"] == "203.0.113.2"


def test_ttl_expiry_removes_entries_and_the_next_packet_asks_again(lab):
    # fd00:2::/64 (xtr2's records: TTL 1 min) has been idle since the SMR
    # test re-queried it; 10.3.0.0/24 is the 1-minute negative entry. Both must
    # leave the map-cache, and the data plane, when their TTL runs out.
    cache = cp.map_cache(lab, "xtr1")
    v6, unreg = cache["fd00:2::/64"], cache["10.3.0.0/24"]
    assert v6["ttl_s"] == 60 and unreg["ttl_s"] == 60
    wait = max(v6["expires_in_s"], unreg["expires_in_s"]) + 5

    def expired():
        c = cp.map_cache(lab, "xtr1")
        return "fd00:2::/64" not in c and "10.3.0.0/24" not in c
    assert cp.eventually(expired, wait, 0.5), cp.map_cache(lab, "xtr1")
    before = cp.counters(lab, "xtr1")
    assert before["daemon"]["effect_errors"] == 0
    assert _role(before, "itr")["expired"] >= 2
    # Gone from BPF too: the next packet misses again and is resolved again.
    got = cp.ping(lab, "hostA", B6, count=4, timeout=1.0)
    assert got == 4
    after = cp.counters(lab, "xtr1")
    assert after["datapath"]["miss"] > before["datapath"]["miss"]
    assert _role(after, "itr")["map_request_tx"] > _role(before, "itr")["map_request_tx"]
    assert "fd00:2::/64" in cp.map_cache(lab, "xtr1")
