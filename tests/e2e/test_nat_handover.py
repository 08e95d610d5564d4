"""A mobile node with a NATed and a public uplink, end to end in the `nat`
namespace lab: real `lispctl up` daemons on the mobile node (mob), the
MS/MR, the RTR and the correspondent xTR (pub, subscribed to mob's
mapping); an nftables masquerade NAT in front of mob's preferred uplink
home0; pub0 public. tshark reads the NAT checks, the ECM'd Map-Register and
the data to and from the NAT's translated port; a TCP connection from the
correspondent's host to mob's EID keeps carrying data through the handover
NATed -> public -> NATed (docs/nat.md)."""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from lispctl.lab import Lab, load
from lispctl.lab import dataplane as dp
from lispctl.lab.scenarios import control as cp
from lispctl.lab.scenarios import nat as nt
from tests.conftest import need_root, unavailable

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def lab():
    need_root()
    if not shutil.which("nft"):
        unavailable("nft is not installed (Debian package nftables; scripts/setup.sh installs it)")
    with Lab(load("nat")) as lab:
        nt.start_mobile_peers(lab)          # NAT, msmr, rtr, pub: mob starts in the first test
        yield lab


def _one(x):
    return x[0] if isinstance(x, list) else x


def _outer(p):
    ip, u = _one(p["ip"]), _one(p["udp"])
    return ip["ip.src"], u["udp.srcport"], ip["ip.dst"], u["udp.dstport"]


def _lisp(pcap, control=False):
    """LISP packets as tshark decodes them, none with expert warnings.
    control: a capture of port 4342 only, where 4341 is the NAT-traversal
    control port of the xTR (tshark would take it for data)."""
    if control:
        out = subprocess.run(["tshark", "-r", str(pcap), "-d", "udp.port==4341,lisp", "-T", "json",
                              "--no-duplicate-keys"], capture_output=True, text=True, timeout=60,
                             check=True).stdout
        layers = [p["_source"]["layers"] for p in json.loads(out or "[]")]
    else:
        layers = dp.tshark_json(pcap)
    pkts = [p for p in layers if "lisp" in p or "lisp-data" in p]
    for p in pkts:
        assert not dp.expert_problems(p), dp.expert_problems(p)
    return pkts


def test_nated_and_public_uplink_at_once(lab):
    """Both uplinks up: home0's NAT check finds the NAT, pub0's finds none;
    one Map-Register, inside an ECM to the RTR from home0, lists the RTR in
    place of home0 (priority 1) and pub0 as it is (priority 2)."""
    with dp.capture(lab, "msmr", "eth0", "udp port 4342") as ms_pcap, \
            dp.capture(lab, "rtr", "eth0", "udp port 4342") as rtr_pcap:
        nt.start_mob(lab)
        home = nt.wait_nat_state(lab, nt.MOB_HOME, "nat", node=nt.MOB)
        pub = nt.wait_nat_state(lab, nt.MOB_PUBLIC, "public", node=nt.MOB)
        assert home and pub, (nt.nat_state(lab, nt.MOB_HOME, nt.MOB), cp.log_tail(lab, nt.MOB))
        assert home["translated"] == f"{nt.NAT_PUBLIC}:{nt.MOB_DATA_PORT_MAPPED}" and home["rtr"] == nt.RTR_RLOC
        assert pub["translated"] == f"{nt.MOB_PUBLIC}:4341" and pub["rtr"] is None
        assert cp.eventually(lambda: cp.counters(lab, nt.MOB)["roles"]["nat"].get("map_notify_via_rtr_rx"), 10)
    reg = nt.wait_mob_registered(lab, [nt.RTR_RLOC, nt.MOB_PUBLIC])
    assert reg is not None and reg["source"] == nt.RTR_RLOC
    assert {r["address"]: r["priority"] for r in reg["rlocs"]} == {nt.RTR_RLOC: 1, nt.MOB_PUBLIC: 2}
    peer = nt.rtr_peer(lab, nt.MOB_XTR_ID)
    assert peer and peer["translated"] == f"{nt.NAT_PUBLIC}:{nt.MOB_DATA_PORT_MAPPED}", peer
    assert peer["private"] == nt.MOB_HOME and peer["eids"] == [f"{nt.MOB_EID}/32"]

    # At the MS: one Info-Request per uplink, home0's from the NAT's address
    # and mapped port, pub0's from its own address and 4341; the replies say so.
    infos = [p for p in _lisp(ms_pcap, control=True) if "lisp.info.r" in str(p.get("lisp"))]
    reqs = {_outer(p)[:2] for p in infos if p["lisp"].get("lisp.info.r") in ("0", "False")}
    assert (nt.NAT_PUBLIC, str(nt.MOB_DATA_PORT_MAPPED)) in reqs and (nt.MOB_PUBLIC, "4341") in reqs, reqs
    replies = [p for p in infos if p["lisp"].get("lisp.info.r") in ("1", "True")]
    to_nat = [p for p in replies if _outer(p)[2] == nt.NAT_PUBLIC]
    assert to_nat and nt.RTR_RLOC in str(to_nat[-1]["lisp"])
    assert f"'lisp.lcaf.natt.etrport': '{nt.MOB_DATA_PORT_MAPPED}'" in str(to_nat[-1]["lisp"])
    assert any(_outer(p)[2] == nt.MOB_PUBLIC for p in replies)
    # At the RTR: the ECM'd Map-Register from the NAT's mapped port, with
    # mob's xTR-ID, the RTR and pub0 as locators, home0 as inner source.
    ecms = [p for p in _lisp(rtr_pcap, control=True) if _outer(p)[:2] == (nt.NAT_PUBLIC, str(nt.MOB_DATA_PORT_MAPPED))
            and "lisp.ecm" in str(p)]
    assert ecms
    text = str(ecms[-1])
    assert nt.MOB_XTR_ID in text.replace(":", "")
    assert nt.RTR_RLOC in text and nt.MOB_PUBLIC in text and nt.MOB_HOME in text


def _data_flows(pcap):
    return {_outer(p) for p in _lisp(pcap) if "lisp-data" in p}


def test_tcp_survives_handover_nated_public_nated(lab):
    """hostP streams to mob's EID over one TCP connection. NATed uplink
    preferred: pub -> RTR -> NAT's mapped port -> mob, and mob -> RTR from
    home0. home0 loses its carrier: mob registers pub0 directly, pub follows
    (publish/subscribe), data goes directly both ways. home0 returns: NAT
    found again, registered through the RTR, data through the RTR again.
    The same connection carries data after each handover."""
    mapped = str(nt.MOB_DATA_PORT_MAPPED)
    assert nt.warm_up_mobile(lab), (cp.counters(lab, nt.MOB), cp.log_tail(lab, nt.MOB))
    tcp = nt.MobStream(lab)
    try:
        assert tcp.grows(10), (tcp.sink(), tcp.source())
        # 1. NATed uplink preferred: both directions through the RTR
        assert nt.wait_mob_locator(lab, nt.RTR_RLOC), nt.mob_entry(lab)
        with dp.capture(lab, "rtr", "eth0", "udp port 4341 and not udp port 4342") as pcap:
            assert tcp.grows(10)
        flows = _data_flows(pcap)
        assert (nt.RTR_RLOC, "4341", nt.NAT_PUBLIC, mapped) in flows, flows          # to the translated port
        assert (nt.NAT_PUBLIC, mapped, nt.RTR_RLOC, "4341") in flows, flows          # mob's data, via the NAT
        assert any(f[0] == "203.0.113.10" and f[2] == nt.RTR_RLOC for f in flows), flows   # pub -> RTR

        # 2. home0 down: public uplink only, no RTR
        nt.set_home(lab, False)
        assert nt.wait_mob_locator(lab, nt.MOB_PUBLIC), nt.mob_entry(lab)
        reg = nt.wait_mob_registered(lab, [nt.MOB_PUBLIC])
        assert reg is not None and reg["source"] == nt.MOB_PUBLIC           # registered directly
        assert tcp.grows(10), (tcp.sink(), tcp.source())
        reencap = dp.counters(lab, "rtr")["reencapsulated"]
        with dp.capture(lab, nt.MOB, "pub0", "udp port 4341 and not udp port 4342") as pcap:
            assert tcp.grows(10)
        assert dp.counters(lab, "rtr")["reencapsulated"] == reencap          # nothing via the RTR
        flows = _data_flows(pcap)
        assert any(f[0] == "203.0.113.10" and f[2:] == (nt.MOB_PUBLIC, "4341") for f in flows), flows
        assert any(f[0] == nt.MOB_PUBLIC and f[2] == "203.0.113.10" for f in flows), flows

        # 3. home0 back: NAT found again, through the RTR again
        nt.set_home(lab, True)
        assert nt.wait_nat_state(lab, nt.MOB_HOME, "nat", node=nt.MOB)
        assert nt.wait_mob_locator(lab, nt.RTR_RLOC), nt.mob_entry(lab)
        reg = nt.wait_mob_registered(lab, [nt.RTR_RLOC, nt.MOB_PUBLIC])
        assert reg is not None and reg["source"] == nt.RTR_RLOC
        reencap = dp.counters(lab, "rtr")["reencapsulated"]
        with dp.capture(lab, "rtr", "eth0", "udp port 4341 and not udp port 4342") as pcap:
            assert tcp.grows(10), (tcp.sink(), tcp.source())
        assert dp.counters(lab, "rtr")["reencapsulated"] > reencap + 10
        flows = _data_flows(pcap)
        assert (nt.RTR_RLOC, "4341", nt.NAT_PUBLIC, mapped) in flows, flows
        # mob sends from home0 again (its preferred uplink), not from pub0
        assert (nt.NAT_PUBLIC, mapped, nt.RTR_RLOC, "4341") in flows, flows
        assert not any(f[0] == nt.MOB_PUBLIC for f in flows), flows
        res = tcp.stop()
    finally:
        nt.set_home(lab, True)
    assert res["closed_cleanly"], res
    assert res["sink"]["bytes"] == res["source"]["sent"] and res["source"]["error"] is None, res
