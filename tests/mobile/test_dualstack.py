"""A mobile node with an IPv4-only and an IPv6-only uplink, and the
address-level handover (an RLOC disappears without the link going down).

up1 keeps only its IPv4 address and up2 only its IPv6 address. Both EIDs
(IPv4 and IPv6) keep working when either uplink goes away: the
correspondent then reaches the node over the other family's RLOC, and the
node's own data plane uses only the correspondent's locators of the family
it still has a source address for (no 'no_source' drops). xtr2 subscribes
either by publish/subscribe or by SMRs (the module runs once for each): the
SMR to xtr2 goes to whichever of its ITR-RLOCs mn still has a family for.
The last test stops the daemon and checks that it removed what it made.
"""
from __future__ import annotations

import pytest

from lispctl.lab import Lab, load
from lispctl.lab.scenarios import control as cp
from lispctl.lab.scenarios import mobile as m
from tests.conftest import need_root

pytestmark = pytest.mark.root

V4, V6 = m.UP["up1"][4], m.UP["up2"][6]


@pytest.fixture(scope="module", params=["pubsub", "smr"])
def lab(request):
    need_root()
    smr = request.param == "smr"
    with Lab(load("mobile")) as lab:
        m.remove_address(lab, "up1", 6)
        m.remove_address(lab, "up2", 4)
        # pubsub: the Map-Server notifies xtr2. smr: mn's SMR must reach xtr2
        # at the ITR-RLOC of the family mn has left (xtr2 asked from IPv4 or
        # IPv6; mn remembers both).
        m.start(lab, mn_text=m.mn_config((("up1", 4, 1, 100), ("up2", 6, 1, 100)), smr=smr),
                tag=f"ds{request.param}", subscribe=not smr)
        m.warm_up(lab)
        lab.variant = request.param
        yield lab


def _both_eids_answer(lab) -> None:
    for fam in (4, 6):
        got = cp.eventually(lambda: cp.ping(lab, m.HOST, m.MN_EID[fam], count=3, timeout=0.5) == 3, 5, 0.05)
        assert got, (fam, m.mn_entry(lab, fam), cp.counters(lab, m.MN).get("datapath"))


def _no_source_drops(lab) -> int:
    return cp.counters(lab, m.MN)["datapath"]["drops"]["no_source"]


def test_single_family_uplinks_announced(lab):
    for fam in (4, 6):
        assert m.usable_locators(m.mn_entry(lab, fam)) == sorted([V4, V6])
    _both_eids_answer(lab)


@pytest.mark.parametrize("lost,left", [("up1", V6), ("up2", V4)])
def test_either_uplink_can_go(lab, lost, left):
    tcp = {fam: m.TcpStream(lab, fam=fam, port=5400 + fam, tag=f"ds-{lost}-{fam}") for fam in (4, 6)}
    try:
        for s in tcp.values():
            assert s.grows(10), (s.sink(), s.source())
        m.set_access(lab, lost, False)
        for fam in (4, 6):
            assert m.wait_usable(lab, [left], fam), (m.mn_entry(lab, fam), cp.log_tail(lab, m.MN))
        _both_eids_answer(lab)
        for s in tcp.values():
            assert s.grows(15), ("stream stalled", s.sink(), s.source())
        assert _no_source_drops(lab) == 0
        m.set_access(lab, lost, True)
        for fam in (4, 6):
            assert m.wait_usable(lab, [V4, V6], fam), m.mn_entry(lab, fam)
        for s in tcp.values():
            assert s.grows(15), ("stream stalled after return", s.sink(), s.source())
        if lab.variant == "smr":
            etr = cp.counters(lab, m.MN)["roles"]["etr"]
            assert etr.get("smr_tx", 0) > 0 and etr.get("smr_no_common_family", 0) == 0, etr
            assert cp.counters(lab, m.XTR)["roles"]["itr"].get("smr_rx", 0) > 0
    finally:
        res = [s.stop() for s in tcp.values()]
    for r in res:
        assert r["closed_cleanly"] and r["sink"]["bytes"] == r["source"]["sent"], r


def test_address_removed_and_added_without_link_change(lab):
    m.remove_address(lab, "up1", 4)
    for fam in (4, 6):
        e = m.wait_usable(lab, [V6], fam)
        assert e and V4 not in {r["address"] for r in e["rlocs"]}, m.mn_entry(lab, fam)  # gone, not just down
    _both_eids_answer(lab)
    m.add_address(lab, "up1", 4)
    for fam in (4, 6):
        assert m.wait_usable(lab, [V4, V6], fam), m.mn_entry(lab, fam)
    _both_eids_answer(lab)
    assert _no_source_drops(lab) == 0
    st = cp.api(lab, m.MN, "status")
    assert st["mobile_node"]["eid_device"] == "lmn0"


def _mn_state(ns: str) -> dict:
    from pyroute2 import IPRoute
    with IPRoute(netns=ns) as ipr:
        links = sorted(l.get_attr("IFLA_IFNAME") for l in ipr.get_links())
        rules = [r for fam in (2, 10) for r in ipr.get_rules(family=fam) if r.get_attr("FRA_PROTOCOL") == 79]
        routes = [r for fam in (2, 10) for r in ipr.route("dump", family=fam) if r["proto"] == 79]
        tc = [m for idx in [l["index"] for l in ipr.get_links()] for m in ipr.get_filters(index=idx, parent=0xFFFFFFF2)]
    return {"links": links, "rules": len(rules), "routes": len(routes), "ingress_filters": len(tc)}


def test_stop_removes_eid_device_rules_and_pins(lab):
    from pathlib import Path
    before = _mn_state(lab.ns(m.MN))
    assert "lmn0" in before["links"] and before["rules"] > 0 and before["routes"] > 0
    assert cp.stop_node(lab, m.MN) == 0
    after = _mn_state(lab.ns(m.MN))
    assert "lmn0" not in after["links"] and "lmn0p" not in after["links"]
    assert after["rules"] == 0 and after["routes"] == 0 and after["ingress_filters"] == 0, after
    assert not Path("/sys/fs/bpf/lispctl", lab.instance(m.MN)).exists()
    # the xTR never had our EIDs routed natively: nothing reaches them now
    assert cp.ping(lab, m.HOST, m.MN_EID[4], count=1, timeout=0.3) == 0
