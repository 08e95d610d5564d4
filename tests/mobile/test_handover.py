"""Handover of a LISP mobile node in the `mobile` namespace lab.

A ping and a long-lived TCP connection from the correspondent host (hostB,
behind xtr2) to the mobile node's EID run while the node's preferred access
network goes away (carrier loss on up1) and comes back. The connection must
survive (no reset, bytes keep arriving after each handover) and xtr2's
map-cache must follow the locators. Once with SMRs from the mobile node,
once with publish/subscribe (the node sends no SMRs; the Map-Server pushes
the change to xtr2, which subscribed).

One lab for the module; each variant restarts mn and xtr2 with its configs.
"""
from __future__ import annotations

import threading

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
        yield lab


def _role(lab, node, role):
    return cp.counters(lab, node)["roles"].get(role, {})


def _rloc_state(entry: dict) -> dict[str, bool]:
    return {r["address"]: r["reachable"] for r in entry["rlocs"]}


class _Pinger(threading.Thread):
    """Pings the mobile node's EIDs back to back while the handover happens."""

    def __init__(self, lab, fam: int) -> None:
        super().__init__(daemon=True)
        self.lab, self.fam, self.got, self.sent = lab, fam, 0, 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.got += cp.ping(self.lab, m.HOST, m.MN_EID[self.fam], count=5, timeout=0.2)
            self.sent += 5


@pytest.mark.parametrize("variant", ["smr", "pubsub"])
def test_handover_keeps_tcp_and_ping_and_map_cache_follows(lab, variant):
    pubsub = variant == "pubsub"
    m.restart(lab, subscribe=pubsub, smr=not pubsub)
    m.warm_up(lab)
    for fam in (4, 6):
        assert m.usable_locators(m.mn_entry(lab, fam)) == sorted([UP1[4], UP1[6]])
    mn0, x0 = _role(lab, m.MN, "etr"), _role(lab, m.XTR, "itr")

    tcp = m.TcpStream(lab, fam=4, tag=f"tcp-{variant}")
    pingers = [_Pinger(lab, 4), _Pinger(lab, 6)]
    try:
        assert tcp.grows(10), (tcp.sink(), tcp.source())
        for p in pingers:
            p.start()

        # away: up1's carrier goes; up2 (priority 2) takes over
        m.set_access(lab, "up1", False)
        for fam in (4, 6):
            e = m.wait_locator(lab, UP2[4], fam)
            assert e, (m.mn_entry(lab, fam), cp.log_tail(lab, m.MN))
            state = _rloc_state(e)
            # up1's locators are still announced, with the R bit clear
            assert state[UP1[4]] is False and state[UP1[6]] is False
            assert state[UP2[4]] is True and state[UP2[6]] is True
        assert tcp.grows(10), ("no bytes after the handover", tcp.sink(), tcp.source())
        assert not tcp.sink().get("error") and not tcp.source().get("error")
        for fam in (4, 6):
            assert cp.ping(lab, m.HOST, m.MN_EID[fam], count=3, timeout=1.0) == 3
        rx2 = m.rx_packets(lab, "up2")
        assert tcp.grows(5) and m.rx_packets(lab, "up2") > rx2      # the stream now arrives on up2

        # back: up1 returns and, being preferred, carries the traffic again
        m.set_access(lab, "up1", True)
        for fam in (4, 6):
            e = m.wait_locator(lab, UP1[4], fam)
            assert e and m.usable_locators(e) == sorted([UP1[4], UP1[6]]), m.mn_entry(lab, fam)
        assert tcp.grows(10), ("no bytes after returning", tcp.sink(), tcp.source())
    finally:
        for p in pingers:
            p.stop.set()
        for p in pingers:
            p.join(10)
    res = tcp.stop()
    assert res["closed_cleanly"], res                      # FIN, not a reset
    assert res["source"]["error"] is None and res["sink"]["bytes"] == res["source"]["sent"], res
    for p in pingers:
        # a few echoes die in the milliseconds between carrier loss and the new mapping
        assert p.sent >= 10 and p.got >= p.sent * 0.7, (p.fam, p.got, p.sent)

    mn1, x1 = _role(lab, m.MN, "etr"), _role(lab, m.XTR, "itr")
    assert mn1["map_register_tx"] > mn0["map_register_tx"]        # re-registered at once
    if pubsub:
        assert mn1.get("smr_tx", 0) == 0                            # the change came by Map-Notify
        assert x1.get("pubsub_notify_rx", 0) >= x0.get("pubsub_notify_rx", 0) + 2
        assert x1.get("smr_rx", 0) == x0.get("smr_rx", 0)
    else:
        assert mn1["smr_tx"] >= mn0.get("smr_tx", 0) + 2
        assert x1["smr_rx"] >= x0.get("smr_rx", 0) + 2
        assert x1.get("pubsub_notify_rx", 0) == 0


def test_control_traffic_leaves_from_rlocs_never_the_eid(lab):
    """Everything mn's daemon sent went out of an uplink from an RLOC: the
    EID device saw no control packet (it would have been dropped there)."""
    if (m.MN, cp.DAEMON) not in lab.procs:
        m.start(lab)
    c = cp.counters(lab, m.MN)
    assert c["daemon"]["send_errors"] == 0 and c["daemon"]["sends"] > 0
    regs = cp.sites(lab)["mobile"]["eid_prefixes"]
    srcs = {r["source"] for p in regs for r in p["registrations"]}
    rlocs = {a for up in m.UP.values() for a in up.values()}
    assert srcs and srcs <= rlocs, srcs
    assert c["datapath"]["drops"]["no_source"] == 0
