"""LISP and the non-LISP Internet end to end (RFC 6832), in the
`interworking` namespace lab: real `lispctl up` daemons (MS/MR, the site's
xTR, a PxTR running PITR + PETR), real BPF data planes, and two real BIRD 2
daemons speaking eBGP (PxTR AS 65001 -> "Internet" router AS 65000).

Paths: legacy -> Internet router (BGP route) -> PITR (encapsulates) -> xtr1
-> hostA, and hostA -> xtr1 (miss/negative answer: to the PETR) -> PETR
(decapsulates, forwards natively) -> legacy; IPv4 and IPv6 EIDs, the site's
provider IPv4-only (IPv6 EIDs over IPv4 RLOCs). Packets are checked with
tshark on the underlay; the announcement in the Internet router's kernel
table. One lab for the module; tests run in file order and each leaves the
lab serving.
"""
from __future__ import annotations

import ipaddress
import socket
import time

import pytest

from lispctl.lab import Lab, load
from lispctl.lab.dataplane import capture, expert_problems, tshark_json
from lispctl.lab.scenarios import control as cp
from lispctl.lab.scenarios import interworking as iw
from tests.conftest import need_root, unavailable
from tests.datapath import packets as P
from tests.e2e import tshark

pytestmark = pytest.mark.root

XTR1_RLOC = "198.51.100.1"
FAM = iw.PATHS          # family -> (site host, legacy node, legacy address)


@pytest.fixture(scope="module")
def lab():
    need_root()
    import shutil
    for tool in ("bird", "birdc", "tshark", "tcpdump"):
        if not shutil.which(tool):
            unavailable(f"{tool} not installed (scripts/setup.sh)")
    with Lab(load("interworking")) as lab:
        iw.start(lab)
        cp.wait_registered(lab, ("site1", "mn"))
        iw.wait_bgp(lab, iw.AGGREGATES)
        yield lab


def _dp(lab) -> dict:
    return cp.counters(lab, "pxtr")["datapath"]


def _warm(lab, src: str, dst: str) -> None:
    """Until a ping gets through (the first packets resolve the mapping)."""
    assert cp.eventually(lambda: cp.ping(lab, src, dst, count=1, timeout=0.5), 10), (src, dst)


def test_aggregates_announced_over_bgp(lab):
    assert iw.announcement_routes(lab) == set(iw.AGGREGATES)
    with lab.ipr("inet") as ipr:
        for agg in iw.AGGREGATES:
            net = ipaddress.ip_network(agg)
            fam = socket.AF_INET if net.version == 4 else socket.AF_INET6
            r = [r for r in ipr.get_routes(family=fam, proto=iw.RTPROT_BIRD)
                 if r.get_attr("RTA_DST") == str(net.network_address) and r["dst_len"] == net.prefixlen]
            assert r, agg
            assert r[0].get_attr("RTA_GATEWAY") == ("100.64.0.2" if net.version == 4 else "2001:db8:64::2")
    out = iw.birdc(lab, "inet", "show", "route", "all").stdout
    assert "BGP.as_path: 65001" in out, out
    pitr = cp.api(lab, "pxtr", "status")["state"]["pitr"]["pitr"]
    assert pitr["announced"] and pitr["serving"], pitr


def test_pitr_map_requests_p_bit_source_eid_afi_0(lab):
    with capture(lab, "core", "c3", "udp port 4342") as pcap:
        time.sleep(1.5)                               # health probes: one a second
        cp.ping(lab, "legacy", "10.1.0.77", count=1, timeout=0.3)    # a miss for an unused EID
        time.sleep(0.5)
    rows = tshark.fields(pcap, ["lisp.type", "lisp.mreq.flags.pitr", "lisp.mreq.srceid.afi",
                          "lisp.mreq.itr_rloc_ipv4", "lisp.mreq.record.prefix.ipv4"], "lisp.type == 1")
    assert rows, "no Map-Request from the PITR"
    asked = set()
    for typ, p, afi, itr_rloc, prefix in rows:
        assert p in ("1", "True") and afi == "0" and itr_rloc == iw.PXTR_RLOC, rows
        asked.add(prefix)
    assert "192.0.2.10" in asked and "10.1.0.77" in asked, asked     # health probe, miss


@pytest.mark.parametrize("fam", [4, 6])
def test_legacy_to_site_through_the_pitr(lab, fam):
    host, node, legacy = FAM[fam]
    _warm(lab, node, host)
    before = _dp(lab)
    with capture(lab, "core", "c3", f"udp dst port 4341 and src host {iw.PXTR_RLOC}") as pcap:
        assert cp.ping(lab, node, host, count=5, timeout=1.0) == 5
    rows = tshark.fields(pcap, ["ip.src", "ip.dst", "ipv6.src", "ipv6.dst"], "lisp-data")
    assert len(rows) >= 5
    for s4, d4, s6, d6 in rows:
        # outer IPv4 PITR RLOC -> xtr1 RLOC; inner legacy -> host (IPv6 inner over IPv4)
        assert s4.split(",")[0] == iw.PXTR_RLOC and d4.split(",")[0] == XTR1_RLOC
        inner_src, inner_dst = (s4.split(",")[1], d4.split(",")[1]) if fam == 4 else (s6, d6)
        assert (inner_src, inner_dst) == (legacy, host)
    # no malformed packet or expert warning anywhere in what the PITR sent
    assert [p for layers in tshark_json(pcap) for p in expert_problems(layers)] == []
    after = _dp(lab)
    assert after["encapsulated"] >= before["encapsulated"] + 5
    entry = cp.entry_for(cp.map_cache(lab, "pxtr"), host)
    assert entry["action"] == "no-action" and [r["address"] for r in entry["rlocs"]] == [XTR1_RLOC]


@pytest.mark.parametrize("fam", [4, 6])
def test_site_to_legacy_through_the_petr(lab, fam):
    host, _node, legacy = FAM[fam]
    _warm(lab, "hostA", legacy)
    before = _dp(lab)
    with capture(lab, "core", "c3", f"udp dst port 4341 and dst host {iw.PXTR_RLOC}") as enc, \
            capture(lab, "inet", "i1", f"{'ip' if fam == 4 else 'ip6'} src {host}") as native:
        assert cp.ping(lab, "hostA", legacy, count=5, timeout=1.0) == 5
    rows = tshark.fields(enc, ["ip.src", "ip.dst", "ipv6.dst"], "lisp-data")
    assert len(rows) >= 5
    for s4, d4, d6 in rows:
        assert s4.split(",")[0] == XTR1_RLOC and d4.split(",")[0] == iw.PXTR_RLOC
        assert (d4.split(",")[1] if fam == 4 else d6) == legacy
    assert [p for layers in tshark_json(native) for p in expert_problems(layers)] == []
    nat = tshark.fields(native, ["ip.dst", "ipv6.dst", "udp.port"])
    assert len(nat) >= 5 and all((r[0] or r[1]) == legacy and not r[2] for r in nat), nat  # not LISP
    after = _dp(lab)
    assert after["other"]["petr_forwarded"] >= before["other"]["petr_forwarded"] + 5
    # xtr1 learnt a negative natively-forward answer and still sends to the PETR
    entry = cp.entry_for(cp.map_cache(lab, "xtr1"), legacy)
    assert entry is not None and entry["action"] == "natively-forward", cp.map_cache(lab, "xtr1")
    assert cp.counters(lab, "xtr1")["datapath"]["other"]["petr"] >= 5


@pytest.mark.parametrize("fam", [4, 6])
def test_mobile_node_and_legacy_hosts_through_the_pxtr(lab, fam):
    """The mobile node (IPv4-only uplink) reaches the legacy host through the
    PETR and is reached through the PITR, whose aggregate covers its EID."""
    mn, node, legacy = (iw.MN4, "legacy", iw.LEGACY4) if fam == 4 else (iw.MN6, "legacy6", iw.LEGACY6)
    _warm(lab, "mn", legacy)
    _warm(lab, node, mn)
    before = _dp(lab)
    assert cp.ping(lab, "mn", legacy, count=3, timeout=1.0) == 3
    assert cp.ping(lab, node, mn, count=3, timeout=1.0) == 3
    after = _dp(lab)
    assert after["other"]["petr_forwarded"] >= before["other"]["petr_forwarded"] + 6   # requests + replies
    assert after["encapsulated"] >= before["encapsulated"] + 6
    entry = cp.entry_for(cp.map_cache(lab, "pxtr"), mn)
    assert [r["address"] for r in entry["rlocs"]] == ["192.0.2.130"], entry
    r = cp.tcp_transfer(lab, node, "mn", mn, 128 * 1024)
    assert r["intact"], r


def test_tcp_both_ways_both_families(lab):
    for src, dst_node, dst in (("legacy", "hostA", iw.HOST4), ("legacy6", "hostA", iw.HOST6),
                               ("hostA", "legacy", iw.LEGACY4), ("hostA", "legacy6", iw.LEGACY6)):
        r = cp.tcp_transfer(lab, src, dst_node, dst, 256 * 1024)
        assert r["intact"] and r["sent"] == 256 * 1024, (src, dst, r)


def _send_lisp_here(dst_rloc: str, inners: list[bytes]) -> None:
    """LISP data packets (header + inner packet) over a UDP socket to 4341."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for inner in inners:
            s.sendto(P.lisp() + inner, (dst_rloc, 4341))


def test_petr_drops_outside_accept_eids_and_local_only(lab):
    """Bad input from the underlay: an inner source outside petr.accept-eids
    and inner destinations that are local-only are dropped and counted, and
    nothing reaches the Internet side."""
    before = _dp(lab)["drops"]
    denied = [P.ip_packet("10.99.0.1", iw.LEGACY4), P.ip_packet("fd99::1", iw.LEGACY6)]
    local = [P.ip_packet(iw.HOST4, "127.0.0.1"), P.ip_packet(iw.HOST4, "169.254.0.1"),
             P.ip_packet(iw.HOST6, "fe80::1"), P.ip_packet(iw.HOST6, "::1")]
    with capture(lab, "inet", "i1", "(ip src 10.99.0.1) or (ip6 src fd99::1) or (ip dst 127.0.0.1)") as pcap:
        lab.call("core", _send_lisp_here, iw.PXTR_RLOC, denied * 5 + local * 5)
        time.sleep(0.3)

    def counted():
        d = _dp(lab)["drops"]
        return d if (d["petr_src_denied"] - before["petr_src_denied"] >= 10 and
                     d["petr_local_only"] - before["petr_local_only"] >= 20) else None
    d = cp.eventually(counted, 5)
    assert d, (before, _dp(lab)["drops"])
    assert d["petr_src_denied"] - before["petr_src_denied"] == 10
    assert d["petr_local_only"] - before["petr_local_only"] == 20
    assert tshark.fields(pcap, ["frame.number"]) == []


def test_every_map_resolver_silent_withdraws_and_answer_reannounces(lab):
    t0 = time.monotonic()
    cp.stop_node(lab, "msmr")
    iw.wait_bgp(lab, iw.AGGREGATES, present=False, timeout=10)
    took = time.monotonic() - t0
    assert took <= 3.0, f"withdrawn {took:.2f} s after the Map-Resolver stopped"
    assert iw.announcement_routes(lab) == set()
    assert not cp.api(lab, "pxtr", "status")["state"]["pitr"]["pitr"]["announced"]
    cp.start_node(lab, "msmr")
    iw.wait_bgp(lab, iw.AGGREGATES, timeout=10)
    cp.wait_registered(lab, ("site1", "mn"))
    _warm(lab, "legacy", iw.HOST4)


def test_pitr_stop_withdraws_within_3s_and_start_reannounces(lab):
    t0 = time.monotonic()
    cp.stop_node(lab, "pxtr")
    iw.wait_bgp(lab, iw.AGGREGATES, present=False, timeout=10)
    took = time.monotonic() - t0
    assert took <= 3.0, f"withdrawn {took:.2f} s after the PITR was told to stop"
    assert iw.announcement_routes(lab) == set()
    assert cp.ping(lab, "legacy", iw.HOST4, count=1, timeout=0.5) == 0     # no route any more
    cp.start_node(lab, "pxtr")
    iw.wait_bgp(lab, iw.AGGREGATES, timeout=20)
    for host, node, _ in FAM.values():
        _warm(lab, node, host)
        assert cp.ping(lab, node, host, count=3, timeout=1.0) == 3
