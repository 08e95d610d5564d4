"""Multihoming of a mobile node: two uplinks at the same priority share the
flows toward the node by weight, and losing one moves every flow to the
other without breaking established TCP connections.

The split is decided by the ITR that encapsulates, so it is measured in the
direction whose locator set the test controls: hostB -> mn's EID, where
xtr2 hashes each flow onto one of mn's locators. Each flow's uplink shows
in mn's per-interface receive counters (the lab's underlay carries nothing
else in that direction but a few control messages).
"""
from __future__ import annotations

import pytest

from lispctl.lab import Lab, load
from lispctl.lab.scenarios import control as cp
from lispctl.lab.scenarios import mobile as m
from tests.conftest import need_root

pytestmark = pytest.mark.root

FLOWS = 2000                 # distinct UDP source ports; the split's noise is ~1 point


def _config(w1: int, w2: int) -> str:
    return m.mn_config((("up1", 4, 1, w1), ("up2", 4, 1, w2)))


@pytest.fixture(scope="module")
def lab():
    need_root()
    with Lab(load("mobile")) as lab:
        yield lab


def _split(lab) -> tuple[int, int]:
    r1, r2 = m.rx_packets(lab, "up1"), m.rx_packets(lab, "up2")
    sent = lab.call(m.HOST, m.udp_flows_here, m.MN_EID[4], 9, FLOWS, 1)
    assert sent == FLOWS

    def arrived():
        d1, d2 = m.rx_packets(lab, "up1") - r1, m.rx_packets(lab, "up2") - r2
        return (d1, d2) if d1 + d2 >= FLOWS else None
    got = cp.eventually(arrived, 5, 0.05)
    assert got, "datagrams did not arrive"
    return got


@pytest.mark.parametrize("w1,w2", [(50, 50), (80, 20)])
def test_flows_split_by_weight(lab, w1, w2):
    m.restart(lab, mn_text=_config(w1, w2), tag=f"w{w1}")
    m.warm_up(lab, (4,))
    entry = m.mn_entry(lab)
    assert {(r["address"], r["weight"]) for r in entry["rlocs"]} == {(m.UP["up1"][4], w1), (m.UP["up2"][4], w2)}
    d1, d2 = _split(lab)
    share = d1 / (d1 + d2)
    assert abs(share - w1 / (w1 + w2)) < 0.05, (d1, d2)


def test_link_loss_moves_every_flow_and_tcp_survives(lab):
    m.restart(lab, mn_text=_config(50, 50), tag="w50b")
    m.warm_up(lab, (4,))
    streams = [m.TcpStream(lab, fam=4, port=5300 + i, tag=f"mh{i}") for i in range(6)]
    try:
        for s in streams:
            assert s.grows(10), (s.sink(), s.source())
        m.set_access(lab, "up2", False)
        assert m.wait_usable(lab, [m.UP["up1"][4]]), m.mn_entry(lab)
        d1, d2 = _split(lab)
        assert d2 == 0 and d1 >= FLOWS, (d1, d2)               # every flow on up1 now
        for s in streams:
            assert s.grows(15), ("stream stalled after the link loss", s.sink(), s.source())
        m.set_access(lab, "up2", True)
        assert m.wait_usable(lab, [m.UP["up1"][4], m.UP["up2"][4]]), m.mn_entry(lab)
        d1, d2 = _split(lab)
        assert abs(d1 / (d1 + d2) - 0.5) < 0.05, (d1, d2)      # shared again
        for s in streams:
            assert s.grows(15), ("stream stalled after the link returned", s.sink(), s.source())
    finally:
        results = [s.stop() for s in streams]
    for r in results:
        assert r["closed_cleanly"] and r["source"]["error"] is None, r
        assert r["sink"]["bytes"] == r["source"]["sent"], r
