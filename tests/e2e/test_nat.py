"""NAT traversal end to end in the `nat` namespace lab: a real `lispctl up`
xTR behind an nftables masquerade NAT detects it with an Info-Request to a
real Map-Server daemon, sends its Map-Register to a real RTR daemon inside
an ECM, which forwards it to the Map-Server and relays the Map-Notify back
through the NAT; data goes both ways through the RTR's re-encapsulating data
plane; tshark reads every message on the wire."""
from __future__ import annotations

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
    import shutil
    if not shutil.which("nft"):
        unavailable("nft is not installed (Debian package nftables; scripts/setup.sh installs it)")
    with Lab(load("nat")) as lab:
        nt.nat_rules(lab)
        cp.start_node(lab, "msmr")
        cp.start_node(lab, "rtr")
        yield lab


def _lisp(pkts):
    return [p for p in pkts if "lisp" in p]


def test_nat_detected_and_registration_sent_through_the_rtr(lab):
    with dp.capture(lab, "msmr", "eth0", "udp port 4342") as ms_pcap, \
            dp.capture(lab, "rtr", "eth0", "udp") as rtr_pcap:
        cp.start_node(lab, "mn")
        st = nt.wait_nat_state(lab, nt.PRIVATE_RLOC, "nat")
        assert st is not None, (nt.nat_state(lab), cp.log_tail(lab, "mn"))
        host, port = st["translated"].rsplit(":", 1)
        assert host == nt.NAT_PUBLIC and st["rtr"] == nt.RTR_RLOC
        nat = cp.eventually(lambda: (c := cp.counters(lab, "mn")["roles"].get("nat", {}))
                            .get("map_notify_via_rtr_rx") and c, 15)
        assert nat, (cp.counters(lab, "mn"), cp.log_tail(lab, "rtr"))
        assert nat["info_reply_ok"] >= 1 and nat.get("info_reply_unknown_nonce", 0) == 0
        assert nat.get("map_notify_via_rtr_bad_auth", 0) == 0
        text = cp.cli(lab, "mn", "status").stdout
        assert f"{nt.PRIVATE_RLOC}: nat seen as {nt.NAT_PUBLIC}:{port}, RTR {nt.RTR_RLOC}" in text
    ms = cp.counters(lab, "msmr")["roles"]["ms"]
    assert ms["info_reply_tx"] >= 1 and ms.get("info_request_bad_auth", 0) == 0
    # the MS holds mn's EID with the RTR as its locator, registered via the RTR
    [reg] = cp.sites(lab)["mn"]["eid_prefixes"][0]["registrations"]
    assert [r["address"] for r in reg["rlocs"]] == [nt.RTR_RLOC] and reg["source"] == nt.RTR_RLOC

    # At the MS: the Info-Request arrives from the NAT's address; the reply says so.
    pkts = _lisp(dp.tshark_json(ms_pcap))
    infos = [p for p in pkts if "lisp.info.r" in str(p["lisp"])]
    assert infos, pkts
    for p in infos:
        assert not dp.expert_problems(p), dp.expert_problems(p)
    req = next(p for p in infos if p["lisp"].get("lisp.info.r") in ("0", "False"))
    rep = next(p for p in infos if p["lisp"].get("lisp.info.r") in ("1", "True"))
    assert req["ip"]["ip.src"] == nt.NAT_PUBLIC and req["udp"]["udp.srcport"] == port
    text = str(rep["lisp"])
    assert f"'lisp.lcaf.natt.etrport': '{port}'" in text
    assert nt.NAT_PUBLIC in text and nt.RTR_RLOC in text and rep["ip"]["ip.dst"] == nt.NAT_PUBLIC

    # At the RTR: an ECM (NAT'd source) carrying the Map-Register with the
    # xTR-ID and the RTR as locator, as tshark reads it.
    pkts = _lisp(dp.tshark_json(rtr_pcap))
    def outer_src(p):
        ip = p["ip"][0] if isinstance(p["ip"], list) else p["ip"]
        return ip["ip.src"]
    ecms = [p for p in pkts if outer_src(p) == nt.NAT_PUBLIC and "lisp.ecm" in str(p)]
    assert ecms, pkts
    for p in ecms:
        assert not dp.expert_problems(p), dp.expert_problems(p)
    text = str(ecms[0])
    assert "0123456789abcdef0123456789abcdef" in text.replace(":", "")
    assert nt.RTR_RLOC in text and nt.PRIVATE_RLOC in text      # locator; inner source

    # the RTR knows mn by its xTR-ID at the NAT's address and the port its
    # ECMs came from (the lab NAT randomises ports per destination, so this
    # is not the port the MS saw)
    [peer] = cp.api(lab, "rtr", "status")["state"]["rtr"]["peers"]
    udp = ecms[-1]["udp"][0] if isinstance(ecms[-1]["udp"], list) else ecms[-1]["udp"]
    assert peer["xtr_id"] == "0123456789abcdef0123456789abcdef"
    assert peer["translated"] == f"{nt.NAT_PUBLIC}:{udp['udp.srcport']}"
    assert peer["private"] == nt.PRIVATE_RLOC and peer["eids"] == ["10.1.0.0/24"]
    # mn's data keepalive (an Info-Request from its 4341 to the RTR's 4341)
    # opened a binding of its own, at yet another port: the RTR's data goes there
    keepalives = [p for p in dp.tshark_json(rtr_pcap)
                  if outer_src(p) == nt.NAT_PUBLIC and _udp(p)["udp.dstport"] == "4341"]
    assert keepalives, pkts
    data_port = _udp(keepalives[-1])["udp.srcport"]
    assert data_port != udp["udp.srcport"]
    peer = nt.rtr_peer(lab)
    assert peer["data"] == f"{nt.NAT_PUBLIC}:{data_port}", peer
    [entry] = cp.api(lab, "rtr", "map-cache")
    assert entry["eid"] == "10.1.0.0/24" and entry["rlocs"][0]["address"] == nt.NAT_PUBLIC
    assert entry["rlocs"][0]["port"] == int(data_port)
    assert "data_keepalive_unknown" not in cp.counters(lab, "rtr")["roles"]["rtr"]
    assert dp.counters(lab, "rtr").get("drop_malformed", 0) == 0     # passed up, not dropped as data


def test_nat_reboot_is_recovered_within_one_keepalive(lab):
    """Flush the NAT's conntrack table: the next keepalive (Info-Request and
    ECM'd Map-Register, every 5 s in netns-lab/nat/mn.toml) opens new
    bindings; the RTR moves the peer to the new port once the MS confirms and
    the Map-Notify reaches mn through the new binding."""
    import time
    before = nt.rtr_peer(lab)
    assert before is not None
    notifies = cp.counters(lab, "mn")["roles"]["nat"]["map_notify_via_rtr_rx"]
    assert nt.flush_conntrack(lab) >= 1
    t0 = time.monotonic()

    def recovered():
        peer = nt.rtr_peer(lab)
        got = cp.counters(lab, "mn")["roles"]["nat"]["map_notify_via_rtr_rx"]
        return (peer["translated"] != before["translated"] and peer["data"] != before["data"]
                and got > notifies and peer)
    peer = cp.eventually(recovered, 5.0 + 2.0)
    took = time.monotonic() - t0
    assert peer, (before, nt.rtr_peer(lab), cp.counters(lab, "rtr"))
    assert took <= 7.0
    assert cp.counters(lab, "rtr")["roles"]["rtr"]["peer_rebound"] >= 1
    [entry] = cp.api(lab, "rtr", "map-cache")          # data follows the new binding
    assert f"{entry['rlocs'][0]['address']}:{entry['rlocs'][0]['port']}" == peer["data"]
    assert nt.wait_nat_state(lab, nt.PRIVATE_RLOC, "nat") is not None


def test_public_xtr_with_nat_traversal_on_registers_directly(lab):
    """An RLOC not behind a NAT keeps working as without [nat]: pub's
    Info-Reply shows its own address and port, it registers itself."""
    cp.start_node(lab, "pub")
    st = nt.wait_nat_state(lab, "203.0.113.10", "public", node="pub")
    assert st is not None and st["rtr"] is None and st["translated"] == "203.0.113.10:4341"
    reg = cp.eventually(lambda: cp.sites(lab)["pub"]["eid_prefixes"][0]["registrations"], 15)
    assert [r["address"] for r in reg[0]["rlocs"]] == ["203.0.113.10"] and reg[0]["source"] == "203.0.113.10"
    assert "map_register_via_rtr_tx" not in cp.counters(lab, "pub")["roles"]["nat"]
    assert [p["xtr_id"] for p in cp.api(lab, "rtr", "status")["state"]["rtr"]["peers"]] == \
        ["0123456789abcdef0123456789abcdef"]


def test_nat_binding_expiry_is_recovered_by_the_keepalive(lab):
    """The NAT forgets idle UDP bindings after 2 s (shorter than mn's 5 s
    keepalive): every keepalive finds a new binding, and registration through
    the RTR keeps being confirmed at the new port each time."""
    keys = ("net.netfilter.nf_conntrack_udp_timeout", "net.netfilter.nf_conntrack_udp_timeout_stream")
    old = {k: lab.run("nat", ["sysctl", "-n", k], timeout=5).stdout.strip() for k in keys}
    assert all(old.values()), old
    lab.sysctl("nat", {k: 2 for k in keys})
    try:
        seen = set()
        first = cp.counters(lab, "mn")["roles"]["nat"]["map_notify_via_rtr_rx"]

        def moved_twice():
            peer = nt.rtr_peer(lab)
            seen.add(peer["translated"])
            data.add(peer["data"])
            return len(seen) >= 3 and len(data) >= 3
        data: set = set()
        assert cp.eventually(moved_twice, 20.0, interval=0.5), (seen, data)
        assert cp.counters(lab, "mn")["roles"]["nat"]["map_notify_via_rtr_rx"] >= first + 2
        [entry] = [e for e in cp.api(lab, "rtr", "map-cache") if e["eid"] == "10.1.0.0/24"]
        assert f"{entry['rlocs'][0]['address']}:{entry['rlocs'][0]['port']}" in data
    finally:
        lab.sysctl("nat", old)


def _udp(p):
    return p["udp"][0] if isinstance(p["udp"], list) else p["udp"]


def _outer(p):
    ip = p["ip"][0] if isinstance(p["ip"], list) else p["ip"]
    u = _udp(p)
    return ip["ip.src"], u["udp.srcport"], ip["ip.dst"], u["udp.dstport"]


def _wait_data_binding(lab):
    """The RTR's data binding for mn, once the keepalive has set it and the
    map-cache follows it."""
    def ok():
        peer = nt.rtr_peer(lab) or {}
        entry = [e for e in cp.api(lab, "rtr", "map-cache") if e["eid"] == "10.1.0.0/24"]
        return peer.get("data") and entry and \
            f"{nt.NAT_PUBLIC}:{entry[0]['rlocs'][0]['port']}" == peer["data"] and peer["data"]
    data = cp.eventually(ok, 15)
    assert data, (nt.rtr_peer(lab), cp.api(lab, "rtr", "map-cache"), cp.log_tail(lab, "mn"))
    return data


def test_correspondent_reaches_the_natted_xtr_first(lab):
    """Behind a plain masquerade (conntrack filters by address and port) and
    with no extra NAT rule, hostP reaches hostA through the RTR before mn or
    hostA has sent any data: mn's data keepalive opened the binding."""
    if ("pub", cp.DAEMON) not in lab.procs:
        cp.start_node(lab, "pub")
    _wait_data_binding(lab)
    assert dp.counters(lab, "mn")["encapsulated"] == 0          # mn has sent no data yet
    assert cp.eventually(lambda: cp.ping(lab, "hostP", "10.1.0.2", count=1, timeout=1.0) == 1, 15), \
        (cp.counters(lab, "rtr"), dp.counters(lab, "rtr"), cp.api(lab, "pub", "map-cache"))


def test_data_binding_outlives_the_nats_udp_timeout(lab):
    """The NAT forgets idle UDP bindings after 7 s, longer than mn's 5 s
    keepalive: with no data for longer than that, the keepalive alone keeps
    the data binding, the RTR never has to learn another, and hostP still
    reaches hostA."""
    import time
    keys = ("net.netfilter.nf_conntrack_udp_timeout", "net.netfilter.nf_conntrack_udp_timeout_stream")
    old = {k: lab.run("nat", ["sysctl", "-n", k], timeout=5).stdout.strip() for k in keys}
    lab.sysctl("nat", {k: 7 for k in keys})
    try:
        sent = cp.counters(lab, "mn")["roles"]["nat"]["data_keepalive_tx"]
        # from the next keepalive on, every binding carries the 7 s timeout
        assert cp.eventually(lambda: cp.counters(lab, "mn")["roles"]["nat"]["data_keepalive_tx"] > sent, 8)
        data = _wait_data_binding(lab)
        learned = cp.counters(lab, "rtr")["roles"]["rtr"]["data_binding_learned"]
        t0 = time.monotonic()
        while time.monotonic() - t0 < 9.0:             # longer than the NAT's timeout, no data
            assert nt.rtr_peer(lab)["data"] == data
            time.sleep(0.5)
        assert cp.counters(lab, "rtr")["roles"]["rtr"]["data_binding_learned"] == learned
        assert cp.ping(lab, "hostP", "10.1.0.2", count=2, timeout=1.0) == 2
    finally:
        lab.sysctl("nat", old)


def test_data_both_ways_through_the_rtr(lab):
    """hostA (behind the NATed mn) and hostP (behind pub) talk through the
    RTR: mn sends its data to the RTR from port 4341, the RTR decapsulates,
    resolves 10.5.0.0/24 through the MR (a miss of its data plane) and
    re-encapsulates to pub; pub's replies go to the RTR (mn's registered
    locator), which re-encapsulates them to the NAT's translated
    address:port, from 4341, through the binding mn's keepalive opened."""
    if ("pub", cp.DAEMON) not in lab.procs:
        cp.start_node(lab, "pub")
    mapped = _wait_data_binding(lab)
    # mn's data keepalives are Info-Requests (type 7) on port 4341, which
    # tshark dissects as data with N=0 and E=1 ("invalid flag combination"):
    # only the data packets are judged here.
    with dp.capture(lab, "rtr", "eth0", "udp port 4341 and (udp[8] & 0xf0) != 0x70") as pcap:
        assert cp.eventually(lambda: cp.ping(lab, "hostA", "10.5.0.2", count=1) == 1, 15), \
            (cp.counters(lab, "rtr"), cp.api(lab, "rtr", "map-cache"))
        assert cp.ping(lab, "hostA", "10.5.0.2", count=5, timeout=1.0) == 5
        assert cp.ping(lab, "hostP", "10.1.0.2", count=5, timeout=1.0) == 5
        res = cp.tcp_transfer(lab, "hostA", "hostP", "10.5.0.2", nbytes=1 << 18)
        assert res["intact"], res
    pkts = [p for p in dp.tshark_json(pcap) if "lisp-data" in p and "lisp" not in p]
    assert pkts
    for p in pkts:
        assert not dp.expert_problems(p), dp.expert_problems(p)
    flows = {_outer(p) for p in pkts}
    nat_port = mapped.rsplit(":", 1)[1]
    # mn -> RTR from the translated data port; RTR -> mn to it, from 4341
    assert (nt.NAT_PUBLIC, nat_port, nt.RTR_RLOC, "4341") in flows, flows
    assert (nt.RTR_RLOC, "4341", nt.NAT_PUBLIC, nat_port) in flows, flows
    # and on to pub and back (pub sends from hashed source ports)
    assert any(f[0] == nt.RTR_RLOC and f[2] == "203.0.113.10" for f in flows), flows
    assert any(f[0] == "203.0.113.10" and f[2] == nt.RTR_RLOC for f in flows), flows
    c = dp.counters(lab, "rtr")
    assert c["reencapsulated"] > 0 and c["decapsulated"] >= c["reencapsulated"], c
    # the RTR resolved pub's EIDs itself (a miss of its data plane, a Map-Request to the MR)
    assert any(e["eid"] == "10.5.0.0/24" for e in cp.api(lab, "rtr", "map-cache"))
