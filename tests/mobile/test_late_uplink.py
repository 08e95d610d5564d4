"""An uplink that does not exist when the mobile node starts (a USB modem,
a Wi-Fi interface coming up later) is attached when it appears, and handled
when it is removed and re-created.

mn starts with up2 deleted (the config names it: priority 2 behind up1).
Then up2 is created and addressed: the node registers its locators (the
Map-Server's sites table and xtr2's map-cache show them), the data plane
decapsulates on it (traffic keeps flowing over it when up1 loses its
carrier). Removing the link takes its locators away; re-creating it (a new
ifindex) attaches again.
"""
from __future__ import annotations

import pytest

from lispctl.lab import Lab, load
from lispctl.lab.scenarios import control as cp
from lispctl.lab.scenarios import mobile as m
from tests.conftest import need_root

pytestmark = pytest.mark.root

UP1, UP2 = m.UP["up1"], m.UP["up2"]


@pytest.fixture(scope="module")
def lab():
    need_root()
    with Lab(load("mobile")) as lab:
        m.delete_uplink_link(lab, "up2")
        try:
            m.start(lab, tag="late")
            m.warm_up(lab)
            yield lab
        finally:
            # ours (the lab would remove it by name too; be exact anyway)
            m.delete_uplink_link(lab, "up2")


def _registered(lab) -> list[str]:
    return cp.registered_rlocs(cp.sites(lab)["mobile"]).get(f"{m.MN_EID[4]}/32", [])


def _daemon(lab) -> dict:
    return cp.counters(lab, m.MN)["daemon"]


def _ingress_filter(lab, ifname: str) -> bool:
    with lab.ipr(m.MN) as ipr:
        idx = ipr.link_lookup(ifname=ifname)
        return bool(idx) and bool(ipr.get_filters(index=idx[0], parent=0xFFFFFFF2))


def _traffic_over_up2(lab) -> None:
    t0 = m.set_access(lab, "up1", False)
    try:
        assert m.wait_locator(lab, UP2[4]), (m.mn_entry(lab), cp.log_tail(lab, m.MN))
        rx = m.rx_packets(lab, "up2")
        tcp = m.TcpStream(lab, tag=f"late-{int(t0)}")
        try:
            assert tcp.grows(10), (tcp.sink(), tcp.source(), cp.log_tail(lab, m.MN))
            for fam in (4, 6):
                assert cp.eventually(lambda: cp.ping(lab, m.HOST, m.MN_EID[fam], count=2, timeout=0.5) >= 1,
                                     5, 0.05), (fam, m.mn_entry(lab, fam))
        finally:
            res = tcp.stop()
        assert res["closed_cleanly"], res
        assert m.rx_packets(lab, "up2") > rx + 10          # it really came in on up2
    finally:
        m.set_access(lab, "up1", True)
    assert m.wait_locator(lab, UP1[4]), m.mn_entry(lab)


def test_starts_without_the_missing_uplink(lab):
    assert _registered(lab) == sorted([UP1[4], UP1[6]])
    assert UP2[4] not in {r["address"] for r in (m.mn_entry(lab) or {"rlocs": []})["rlocs"]}
    assert _daemon(lab).get("rloc_interfaces_attached", 0) == 0
    assert _ingress_filter(lab, "up1")


def test_uplink_appearing_later_is_attached_and_registered(lab):
    m.create_uplink_link(lab, "up2")
    want = sorted([UP1[4], UP1[6], UP2[4], UP2[6]])
    assert cp.eventually(lambda: _registered(lab) == want, 10, 0.05), (_registered(lab), cp.log_tail(lab, m.MN))
    assert cp.eventually(lambda: UP2[4] in {r["address"] for r in m.mn_entry(lab)["rlocs"]}, 10, 0.05), \
        m.mn_entry(lab)
    assert _daemon(lab)["rloc_interfaces_attached"] == 1
    assert _ingress_filter(lab, "up2")
    _traffic_over_up2(lab)


def test_uplink_removed_then_recreated(lab):
    assert m.delete_uplink_link(lab, "up2")
    assert cp.eventually(lambda: _registered(lab) == sorted([UP1[4], UP1[6]]), 10, 0.05), _registered(lab)
    assert cp.eventually(lambda: UP2[4] not in {r["address"] for r in m.mn_entry(lab)["rlocs"]}, 10, 0.05), \
        m.mn_entry(lab)
    for fam in (4, 6):
        assert cp.ping(lab, m.HOST, m.MN_EID[fam], count=3, timeout=0.5) >= 2
    m.create_uplink_link(lab, "up2")                      # a new ifindex: attached again
    assert cp.eventually(lambda: UP2[4] in _registered(lab), 10, 0.05), _registered(lab)
    assert _daemon(lab)["rloc_interfaces_attached"] == 2
    assert _daemon(lab).get("attach_errors", 0) == 0
    _traffic_over_up2(lab)
