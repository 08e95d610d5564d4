"""Hand-over to a veth peer (LISP_OUT_PEER, bpf_redirect_peer): which
devices get it (lispctl.datapath.vethpeer.handoff, decided at attach), and
that packets the ITR and the ETR hand over arrive whole at sockets beyond
the veth without crossing its transmit path (its tx counter stays still but
for the xTR's own ARP / ND),
while a device that must see its packets (a root qdisc) keeps them.

Topology (tests/datapath/test_checksum.py's): host namespace -- ck0 | xTR
(the test's namespace) | ck1 -- the RLOC side's namespace.
"""
from __future__ import annotations

import ipaddress
import socket
import subprocess
import time

import pytest

from lispctl.datapath import vethpeer
from lispctl.mapping.types import EidPrefix, Rloc
from tests.datapath import packets as P
from tests.datapath.test_checksum import INNER, NS_H, NS_R, OUTER, _in_ns, _l4_ok, _read, _receivers, \
    _send_udp, _set_tx_csum
from tests.datapath import test_checksum

topo = test_checksum.topo     # the fixture: test_checksum's namespaces and veths

HOST_PORT = 5555
N = 40          # packets per check
# the xTR's own packets on the veth while a check runs (ARP / ND probes of
# a neighbour going stale, MLD): they cross its transmit whatever we do
BACKGROUND = 3


def _tx_packets(ifname: str) -> int:
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        link = ipr.get_links(ipr.link_lookup(ifname=ifname)[0])[0]
    return int(link.get("IFLA_STATS64")["tx_packets"])


def _bits(dp, ifname: str) -> int:
    """ifname's out_devs bits."""
    t = dp.table("out_devs")
    k = t.Key(socket.if_nametoindex(ifname))
    return t[k].value if k in t else 0


def _sync_when(moved, watcher, sync) -> None:
    """The daemon's loop: drain notifications until moved() (or 5 s), then NextHopSync."""
    deadline = time.monotonic() + 5
    while not moved() and time.monotonic() < deadline:
        watcher.drain()
        time.sleep(0.01)
    sync(watcher)


def _host_socket(v: int) -> socket.socket:
    s = socket.socket(socket.AF_INET6 if v == 6 else socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("::" if v == 6 else "0.0.0.0", HOST_PORT))
    s.setblocking(False)
    return s


def _send_sizes(dst: str, sizes) -> None:
    fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        for size in sizes:
            s.sendto(b"u" * size, (dst, 9))


def _send_lisp(dst: str, payloads: list[bytes]) -> None:
    fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        for p in payloads:
            s.sendto(p, (dst, 4341))


def test_decided_by_the_device(topo):
    # ck1's peer is in another namespace, noqueue, no egress filter, no XDP
    assert vethpeer.handoff("ck1").accepts is True
    assert vethpeer.handoff("lo") is None                        # not a veth
    subprocess.run(["ip", "link", "add", "hq0", "type", "veth", "peer", "name", "hq1"], check=True)
    try:
        got = vethpeer.handoff("hq0")
        assert got.accepts is False and "this namespace" in got.reason
    finally:
        subprocess.run(["ip", "link", "del", "hq0"], check=True)
    subprocess.run(["tc", "qdisc", "add", "dev", "ck1", "root", "pfifo"], check=True)
    try:
        got = vethpeer.handoff("ck1")
        assert got.accepts is False and "pfifo" in got.reason
    finally:
        subprocess.run(["tc", "qdisc", "del", "dev", "ck1", "root"], check=True)
    assert vethpeer.handoff("ck1").accepts is True


def test_which_packets_follow_the_devices_offloads(dp, topo):
    """Every packet goes to the peer where the veth's transmit would leave it
    as it is; with tx checksumming off (rloc-checksum "auto" on a veth) only
    packets that need no transmit work do. Followed when the offloads change
    after attach (a link notification -> NextHopSync -> recheck_handoffs)."""
    from lispctl.daemon.ifwatch import NextHopSync
    from lispctl.datapath.datapath import OUT_PEER, OUT_PEER_ALL
    from lispctl.net.watch import InterfaceWatcher

    def bits(ifname: str) -> int:
        return _bits(dp, ifname)

    assert vethpeer.transmit_work("ck0") == ""
    dp.attach_eid_interface("ck0")
    dp.attach_rloc_interface("ck1")                    # a veth: its checksums completed, tx offload off
    assert bits("ck0") == OUT_PEER | OUT_PEER_ALL and dp.peer_handoffs["ck0"]["all_packets"] is True
    assert bits("ck1") == OUT_PEER and dp.peer_handoffs["ck1"]["all_packets"] is False
    assert "tx-checksum-ip-generic" in dp.peer_handoffs["ck1"]["all_packets_reason"]
    sync = NextHopSync(dp)
    with InterfaceWatcher(track_gateways=False, track_forwarding=True) as watcher:
        watcher.drain()
        sync(watcher)
        subprocess.run(["ethtool", "-K", "ck0", "tx-udp-segmentation", "off"], check=True)
        try:
            _sync_when(lambda: watcher.link_changes != sync.seen_links, watcher, sync)
            assert bits("ck0") == OUT_PEER and dp.peer_handoffs["ck0"]["handoff"] is True
            assert "tx-udp-segmentation" in dp.peer_handoffs["ck0"]["all_packets_reason"]
        finally:
            subprocess.run(["ethtool", "-K", "ck0", "tx-udp-segmentation", "on"], check=True)
        _sync_when(lambda: watcher.link_changes != sync.seen_links, watcher, sync)
        assert bits("ck0") == OUT_PEER | OUT_PEER_ALL          # local, so given back too


@pytest.mark.parametrize("complete", [False, True], ids=["offloads-on", "checksums-completed"])
def test_itr_gso_super_packets(dp, topo, complete):
    """A GSO super-packet (UDP_SEGMENT standing in for TSO, 4-in-4: see
    test_checksum) goes to the peer whole when the RLOC veth keeps its
    offloads (rloc-checksum "offload"): its transmit would not touch it. With
    checksums completed (the veth default) it must cross the transmit, which
    segments it and completes every checksum. Either way a socket reader
    beyond gets every segment."""
    host, _gw, dst, prefix = INNER[4]
    rloc, _ = OUTER[4]
    dp.set_mapping(EidPrefix.parse(prefix), [Rloc(ipaddress.ip_address(rloc))])
    dp.attach_eid_interface("ck0")
    dp.attach_rloc_interface("ck1", complete_checksums=complete)
    assert dp.peer_handoffs["ck1"]["all_packets"] is (not complete)
    seg, nseg, rounds = 1000, 6, 5
    socks = _in_ns(NS_R, _receivers)
    try:
        _in_ns(NS_H, _send_udp, dst, 100)              # the next hop, resolved and cached
        assert len(_read(socks, 1)) == 1
        tx = _tx_packets("ck1")
        for _ in range(rounds):
            _in_ns(NS_H, _send_udp, dst, seg * nseg, seg)
        got = _read(socks, rounds * nseg)
        sent = _tx_packets("ck1") - tx
    finally:
        for s in socks:
            s.close()
    assert len(got) == rounds * nseg and all(g[8:].endswith(b"u" * seg) for g in got), [len(g) for g in got]
    if complete:
        assert sent >= rounds * nseg, sent              # segmented by the transmit
        assert all(_l4_ok(g[8:]) == (P.UDP, True) for g in got)
    else:
        assert sent <= BACKGROUND, f"{sent} packets crossed ck1's transmit"


def test_peer_with_xdp_is_not_handed_over(topo):
    # any XDP program on the peer: a handed-over packet would skip it
    prog = _in_ns(NS_R, _attach_pass_xdp, "ck1r")
    try:
        got = vethpeer.handoff("ck1")
        assert got.accepts is False and "XDP" in got.reason
    finally:
        _in_ns(NS_R, _detach_xdp, "ck1r", prog)


def _attach_pass_xdp(ifname: str):
    from bcc import BPF
    b = BPF(text=b"int pass(struct xdp_md *ctx) { return XDP_PASS; }")
    fn = b.load_func(b"pass", BPF.XDP)
    b.attach_xdp(ifname.encode(), fn, 0)
    return b


def _detach_xdp(ifname: str, b) -> None:
    b.remove_xdp(ifname.encode(), 0)


@pytest.mark.parametrize("v, outer_v", [(4, 4), (6, 6), (4, 6), (6, 4)])
def test_itr_hands_over_and_a_qdisc_keeps_it(dp, topo, v, outer_v):
    # across families the room is adjust_room's, which also sets skb->protocol:
    # the peer's stack takes it from there (no eth_type_trans on a hand-over)
    host, _gw, dst, prefix = INNER[v]
    rloc, _ = OUTER[outer_v]
    dp.set_mapping(EidPrefix.parse(prefix), [Rloc(ipaddress.ip_address(rloc))])
    _in_ns(NS_H, _set_tx_csum, "ck0h", False)        # complete checksums, as from a wire

    def run(n: int) -> tuple[int, list[bytes]]:
        socks = _in_ns(NS_R, _receivers)
        try:
            _in_ns(NS_H, _send_udp, dst, 100)        # the next hop, resolved and cached
            assert len(_read(socks, 1)) == 1
            tx = _tx_packets("ck1")
            _in_ns(NS_H, _send_sizes, dst, range(200, 200 + n))
            got = _read(socks, n)
            return _tx_packets("ck1") - tx, got
        finally:
            for s in socks:
                s.close()

    dp.attach_eid_interface("ck0")
    dp.attach_rloc_interface("ck1")
    assert dp.peer_handoffs["ck1"]["handoff"] is True
    sent, got = run(N)
    assert len(got) == N and sent <= BACKGROUND, (sent, len(got), dp.counters())
    for g, size in zip(sorted(got, key=len), range(200, 200 + N)):
        proto, ok = _l4_ok(g[8:])
        assert proto == P.UDP and ok and g[8:].endswith(b"u" * size)

    dp.detach()
    subprocess.run(["tc", "qdisc", "add", "dev", "ck1", "root", "pfifo"], check=True)
    try:
        dp.attach_eid_interface("ck0")
        dp.attach_rloc_interface("ck1")
        assert dp.peer_handoffs["ck1"]["handoff"] is False
        sent, got = run(N)
        assert len(got) == N and sent >= N, (sent, len(got))
    finally:
        subprocess.run(["tc", "qdisc", "del", "dev", "ck1", "root"], check=True)


@pytest.mark.parametrize("inner_v, outer_v", [(4, 4), (6, 6), (4, 6), (6, 4)])
def test_etr_hands_over_decapsulated_packets(dp, topo, inner_v, outer_v):
    host, _gw, remote, _prefix = INNER[inner_v]     # remote: a site behind the other xTR
    rloc_here = {4: "198.51.100.1", 6: "2001:db8:9::1"}[outer_v]
    dp.add_local_rloc(ipaddress.ip_address(rloc_here))
    dp.add_local_eid(EidPrefix.parse("10.1.7.0/24" if inner_v == 4 else "fd00:1:7::/64"))
    dp.attach_eid_interface("ck0")
    dp.attach_rloc_interface("ck1")
    assert dp.peer_handoffs["ck0"]["handoff"] is True

    def payload(i: int) -> bytes:
        inner = P.ip_packet(remote, host, b"d" * (50 + i), sport=4000 + i, dport=HOST_PORT)
        return P.lisp() + inner

    sock = _in_ns(NS_H, _host_socket, inner_v)
    try:
        _in_ns(NS_R, _send_lisp, rloc_here, [payload(0)])    # resolves the host's neighbour
        assert len(_read([sock], 1)) == 1
        tx = _tx_packets("ck0")
        _in_ns(NS_R, _send_lisp, rloc_here, [payload(i) for i in range(1, N + 1)])
        got = _read([sock], N)
        sent = _tx_packets("ck0") - tx
    finally:
        sock.close()
    assert sorted(got, key=len) == [b"d" * (50 + i) for i in range(1, N + 1)]
    assert sent <= BACKGROUND, f"{sent} of {N} crossed ck0's transmit path"


def test_a_qdisc_added_later_takes_the_handover_back(dp, topo):
    """The daemon's loop: a tc notification -> NextHopSync -> recheck_handoffs."""
    from lispctl.daemon.ifwatch import NextHopSync
    from lispctl.datapath.datapath import OUT_PEER
    from lispctl.net.watch import InterfaceWatcher

    def bits(ifname: str) -> int:
        return _bits(dp, ifname)

    dp.attach_eid_interface("ck0")
    dp.attach_rloc_interface("ck1")
    assert bits("ck1") & OUT_PEER and bits("ck0") & OUT_PEER
    sync = NextHopSync(dp)
    with InterfaceWatcher(track_gateways=False, track_forwarding=True) as watcher:
        watcher.drain()
        sync(watcher)
        assert dp.peer_handoffs["ck1"]["handoff"] is True      # our own clsact changed nothing
        subprocess.run(["tc", "qdisc", "add", "dev", "ck1", "root", "pfifo"], check=True)
        try:
            _sync_when(lambda: watcher.tc_changes != sync.seen_tc, watcher, sync)
            assert dp.peer_handoffs["ck1"]["handoff"] is False
            assert "pfifo" in dp.peer_handoffs["ck1"]["reason"]
            assert not bits("ck1") & OUT_PEER
            assert bits("ck0") & OUT_PEER                        # the other one keeps it
        finally:
            subprocess.run(["tc", "qdisc", "del", "dev", "ck1", "root"], check=True)
