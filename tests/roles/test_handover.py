"""ETR handover: an address change re-registers and SMRs recent ITRs at once,
later SMR bursts are paced per target with back-off; link down keeps the
locator with R=0 (in Map-Register and Map-Reply); multihoming by interface;
the mobile node sends its control traffic from an RLOC."""
from pathlib import Path

import pytest

from lispctl.config import load
from lispctl.mapping.types import EidPrefix, Rloc
from lispctl.roles import build_roles, datapath_plan
from lispctl.wire import MapRegister, MapReply, MapRequest, decode_control, request_record

from roles_helpers import XTR, A, ep, make, only_send, sends

P = EidPrefix.parse
ITR1, ITR2 = A("203.0.113.5"), A("203.0.113.6")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def started_etr(extra=""):
    _, roles = make(XTR.format(alg="hmac-sha256") + extra, wan1=["192.0.2.2"])
    etr = roles["etr"]
    etr.tick(0.0)
    for itr in (ITR1, ITR2):
        req = MapRequest(7, (request_record(P("10.1.2.3/32")),), (itr,))
        etr.handle(req.encode(), ep(str(itr)), ep("192.0.2.1"), 1.0)
    return etr


def kinds(effects):
    out = []
    for s in sends(effects):
        m = decode_control(s.payload)
        out.append(("register" if isinstance(m, MapRegister) else "smr" if m.smr else type(m).__name__,
                    str(s.dst.addr)))
    return out


def test_change_registers_and_smrs_at_once_then_paced_per_target():
    etr = started_etr()
    eff = etr.set_interface_addresses("wan1", [A("192.0.2.9")], 10.0)
    assert kinds(eff) == [("register", "198.51.100.10"), ("smr", str(ITR1)), ("smr", str(ITR2))]
    # a second change 30 ms later: registered at once, SMRs wait for the 100 ms spacing
    eff = etr.set_interface_addresses("wan1", [A("192.0.2.10")], 10.03)
    assert kinds(eff) == [("register", "198.51.100.10")]
    assert etr.next_deadline() == 10.1 and etr.counters["smr_deferred"] == 2
    # a third change before that joins the burst already scheduled
    assert kinds(etr.set_interface_addresses("wan1", [A("192.0.2.11")], 10.05)) == [("register", "198.51.100.10")]
    eff = etr.tick(10.1)
    assert kinds(eff) == [("smr", str(ITR1)), ("smr", str(ITR2))]
    smr = decode_control(sends(eff)[0].payload)
    assert A("192.0.2.11") in smr.itr_rlocs and A("192.0.2.10") not in smr.itr_rlocs
    # still busy: the spacing doubles (200 ms)
    etr.set_interface_addresses("wan1", [A("192.0.2.12")], 10.15)
    assert etr.next_deadline() == pytest.approx(10.3)
    assert kinds(etr.tick(etr.next_deadline())) == [("smr", str(ITR1)), ("smr", str(ITR2))]
    # after a quiet period the next change is SMRed immediately again
    eff = etr.set_interface_addresses("wan1", [A("192.0.2.13")], 30.0)
    assert ("smr", str(ITR1)) in kinds(eff)


def test_smr_can_be_turned_off():
    etr = started_etr("\n[etr]\nsmr = false\n")
    assert kinds(etr.set_interface_addresses("wan1", [A("192.0.2.9")], 10.0)) == [("register", "198.51.100.10")]


def test_link_down_keeps_locator_with_r_bit_clear():
    etr = started_etr()
    eff = etr.set_link_state("wan1", False, 10.0)
    reg = decode_control(next(s.payload for s in sends(eff) if s.dst == ep("198.51.100.10")))
    assert [(str(l.address), l.reachable) for l in reg.records[0].locators] == [
        ("192.0.2.1", True), ("192.0.2.2", False)]
    assert ("smr", str(ITR1)) in kinds(eff)
    # Map-Replies say the same; the ITR-RLOC list no longer offers the dead one
    req = MapRequest(8, (request_record(P("10.1.2.3/32")),), (ITR1,))
    _, reply = only_send(etr.handle(req.encode(), ep(str(ITR1)), ep("192.0.2.1"), 11.0))
    assert isinstance(reply, MapReply)
    assert [l.reachable for l in reply.records[0].locators] == [True, False]
    assert etr.site.usable_rlocs() == [A("192.0.2.1")]
    assert etr.set_link_state("wan1", False, 12.0) == []          # no change, nothing sent
    eff = etr.set_link_state("wan1", True, 13.0)
    reg = decode_control(sends(eff)[0].payload)
    assert [l.reachable for l in reg.records[0].locators] == [True, True]


def test_mobile_node_multihoming_and_control_source():
    cfg = load(EXAMPLES / "mobile-node.toml")
    roles = dict(build_roles(cfg, interface_addresses={
        "eth0": [A("192.0.2.7")], "wlan0": [A("203.0.113.7"), A("2001:db8:ff::7")]}))
    etr = roles["etr"]
    eff = etr.tick(0.0)
    (s,) = sends(eff)
    reg = decode_control(s.payload)
    # every uplink address is a locator, each with its interface's priority and weight
    assert len(reg.records) == 2
    locs = {str(l.address): (l.priority, l.weight, l.reachable) for l in reg.records[0].locators}
    assert locs == {"192.0.2.7": (1, 100, True), "203.0.113.7": (2, 100, True), "2001:db8:ff::7": (2, 100, True)}
    # a mobile node's control traffic leaves from an RLOC, never via the EID device
    assert s.src == ep("192.0.2.7")
    # handover: eth0 goes down, then loses its address; Wi-Fi takes over
    eff = etr.set_link_state("eth0", False, 5.0)
    assert all(x.src == ep("203.0.113.7") for x in sends(eff))
    eff = etr.set_interface_addresses("eth0", [], 6.0)
    reg = decode_control(sends(eff)[0].payload)
    assert {str(l.address) for l in reg.records[0].locators} == {"203.0.113.7", "2001:db8:ff::7"}
    plan = datapath_plan(cfg, list(roles.items()))
    assert plan.local_locators == (Rloc(A("203.0.113.7"), 2, 100), Rloc(A("2001:db8:ff::7"), 2, 100))
    assert plan.mobile_node.eid_device == "lmn0" and plan.eid_interfaces == ()
    assert plan.mobile_node.eids == (A("10.9.0.7"), A("2001:db8:9::7"))
    assert plan.rloc_interfaces == ("eth0", "wlan0")
    assert [(u.ifname, u.family, u.priority) for u in plan.mobile_node.uplinks] == [
        ("eth0", 4, 1), ("wlan0", 4, 2), ("wlan0", 6, 2)]
