"""attach_rloc_interface(mode=...): XDP attach/detach with pyroute2, the
generic fallback, the auto choice, and a ping that crosses an RLOC
interface in mode="xdp", decapsulated by the XDP ETR.

Topology (namespaces of this test, names with the pid):

    remote ns  xr0p 198.51.100.2  ==  xr0 198.51.100.1  [test ns: the xTR]  xe0 10.1.1.254  ==  xe0p 10.1.1.10  host ns

The remote side is a UDP socket on 198.51.100.2:4341: it sends a LISP data
packet carrying an ICMP echo request for the host, and receives the host's
reply encapsulated by the xTR's ITR.
"""
from __future__ import annotations

import ctypes
import fcntl
import ipaddress
import logging
import os
import socket
import struct
from pathlib import Path

import pytest

from lispctl.datapath import DatapathError
from lispctl.datapath import attach as A
from lispctl.mapping.types import EidPrefix, Rloc
from tests.datapath import packets as P

ip = ipaddress.ip_address
E = EidPrefix.parse
PID = os.getpid()
REMOTE_NS, HOST_NS = f"ldpxr{PID}", f"ldpxh{PID}"
HOST_MAC = "02:00:00:00:03:10"


def _set_gro(ifname: str, on: bool) -> None:
    """ETHTOOL_SGRO through SIOCETHTOOL on a socket of the current netns."""
    val = ctypes.create_string_buffer(struct.pack("=II", 0x2C, 1 if on else 0))
    ifr = struct.pack("16sP", ifname.encode(), ctypes.addressof(val))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s.fileno(), 0x8946, ifr)


@pytest.fixture
def xlab(lab):
    """The two veth pairs and namespaces above; removed afterwards."""
    from pyroute2 import IPRoute, netns

    made_ns: list[str] = []
    try:
        for ns in (REMOTE_NS, HOST_NS):
            netns.create(ns)
            made_ns.append(ns)
        with IPRoute() as ipr:
            for name, peer, ns in (("xr0", "xr0p", REMOTE_NS), ("xe0", "xe0p", HOST_NS)):
                ipr.link("add", ifname=name, kind="veth", peer=peer)
                ipr.link("set", index=ipr.link_lookup(ifname=peer)[0], net_ns_fd=ns)
                ipr.link("set", index=ipr.link_lookup(ifname=name)[0], state="up")
            xr, xe = ipr.link_lookup(ifname="xr0")[0], ipr.link_lookup(ifname="xe0")[0]
            ipr.addr("add", index=xr, address="198.51.100.1", prefixlen=24)
            ipr.addr("add", index=xe, address="10.1.1.254", prefixlen=24)
            # the remote EIDs are behind the RLOC side, so reverse-path
            # filtering accepts their decapsulated packets
            ipr.route("add", dst="10.2.0.0/16", gateway="198.51.100.2")
        for ns, ifname, addr, gw in ((REMOTE_NS, "xr0p", "198.51.100.2", None),
                                     (HOST_NS, "xe0p", "10.1.1.10", "10.1.1.254")):
            netns.pushns(ns)
            try:
                with IPRoute() as ipr:
                    idx = ipr.link_lookup(ifname=ifname)[0]
                    if ns == HOST_NS:
                        ipr.link("set", index=idx, address=HOST_MAC)
                    ipr.link("set", index=idx, state="up")
                    ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
                    ipr.addr("add", index=idx, address=addr, prefixlen=24)
                    if gw:
                        ipr.route("add", dst="0.0.0.0/0", gateway=gw)
            finally:
                netns.popns()
        yield
    finally:
        with IPRoute() as ipr:
            # deleting xr0 removes the 10.2.0.0/16 route through it as well
            for name in ("xr0", "xe0"):
                idx = ipr.link_lookup(ifname=name)
                if idx:
                    ipr.link("del", index=idx[0])
        for ns in made_ns:
            netns.remove(ns)


def _forwarded() -> int:
    """Ip: ForwDatagrams of the current namespace."""
    lines = [ln.split() for ln in Path("/proc/net/snmp").read_text().splitlines() if ln.startswith("Ip:")]
    return int(lines[1][lines[0].index("ForwDatagrams")])


def _echo(ident: int, seq: int) -> bytes:
    body = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"lisp-xdp" * 4
    return body[:2] + struct.pack("!H", P.csum(body)) + body[4:]


def _ping_across(tries: int = 3) -> bytes:
    """Send the encapsulated echo request from the remote namespace; return
    the inner packet of the encapsulated reply."""
    from pyroute2 import netns
    netns.pushns(REMOTE_NS)
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    finally:
        netns.popns()
    with s:
        s.bind(("198.51.100.2", 4341))
        s.settimeout(1.0)
        for seq in range(1, tries + 1):
            inner = P.ipv4("10.2.0.5", "10.1.1.10", _echo(PID & 0xFFFF, seq), proto=P.ICMP, ttl=64)
            s.sendto(P.lisp() + inner, ("198.51.100.1", 4341))
            try:
                while True:
                    data, _src = s.recvfrom(2048)
                    if len(data) > 8 + 20 and data[8 + 9] == P.ICMP and data[8 + 20] == 0:
                        return data[8:]
            except TimeoutError:
                continue     # first packet may wait for ARP; try again
    raise AssertionError("no encapsulated echo reply came back")


@pytest.fixture
def xtr(dp, xlab):
    dp.remove_local_rloc(ip("192.0.2.1"))      # outer source: our address on xr0
    dp.add_local_rloc(ip("198.51.100.1"))
    dp.set_mapping(E("10.2.0.0/16"), [Rloc(ip("198.51.100.2"))])
    return dp


@pytest.mark.parametrize("path", ["stack", "redirect"])
def test_ping_crosses_xdp_etr(xtr, path):
    dp = xtr
    from pyroute2 import IPRoute, netns
    if path == "redirect":
        # a veth takes redirected XDP frames only when its peer runs NAPI:
        # GRO on (or an XDP program) in the host namespace
        netns.pushns(HOST_NS)
        try:
            _set_gro("xe0p", True)
        finally:
            netns.popns()
        with IPRoute() as ipr:
            ipr.neigh("add", dst="10.1.1.10", lladdr=HOST_MAC, ifindex=ipr.link_lookup(ifname="xe0")[0],
                      state=0x80)
    dp.attach_eid_interface("xe0", xdp_redirect=(path == "redirect"))
    assert dp.attach_rloc_interface("xr0", mode="xdp") == "xdp-native"     # veth has native XDP
    assert A.xdp_program_id("xr0") != 0
    fwd0 = _forwarded()
    reply = _ping_across()
    assert reply[12:16] == ip("10.1.1.10").packed and reply[16:20] == ip("10.2.0.5").packed
    assert reply[20] == 0 and struct.unpack("!H", reply[24:26])[0] == PID & 0xFFFF
    c = dp.counters()
    assert c.decapsulated >= 1 and c.encapsulated >= 1
    # every decapsulation was the XDP ETR's, none the tc ETR's
    assert c.other["xdp_decapsulated"] == c.decapsulated
    assert c.total_drops == 0, c.drops
    if path == "redirect":
        assert c.other["xdp_to_stack"] == 0
        assert _forwarded() == fwd0, "redirected by XDP, not forwarded by the stack"
    else:
        assert c.other["xdp_to_stack"] == c.decapsulated
        assert _forwarded() > fwd0
    dp.detach()
    assert A.xdp_program_id("xr0") == 0


def test_auto_mode_uses_tc_on_veth_and_bad_mode_is_refused(xtr):
    assert A.is_physical("xr0") is False and A.is_physical("lo") is False
    assert xtr.attach_rloc_interface("xr0", mode="auto") == "tc"
    assert A.xdp_program_id("xr0") == 0
    with pytest.raises(DatapathError, match="bad RLOC interface mode"):
        xtr.attach_rloc_interface("xr0", mode="dpdk")


def test_generic_fallback_with_warning(dp, lab, caplog):
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        ipr.link("add", ifname="xbr0", kind="bridge")
    try:
        with caplog.at_level(logging.WARNING, logger="lispctl.datapath.attach"):
            assert dp.attach_rloc_interface("xbr0", mode="xdp") == "xdp-generic"   # a bridge has no native XDP
        assert any("generic" in r.getMessage() for r in caplog.records)
        assert A.xdp_program_id("xbr0") != 0
        # a restarted controller replaces its own program in place
        assert dp.attach_rloc_interface("xbr0", mode="xdp") == "xdp-generic"
        dp.detach()
        assert A.xdp_program_id("xbr0") == 0
    finally:
        with IPRoute() as ipr:
            ipr.link("del", index=ipr.link_lookup(ifname="xbr0")[0])


def test_foreign_xdp_program_is_not_replaced(dp, xlab):
    from bcc import BPF
    b = BPF(text=b"int other_xdp(struct xdp_md *ctx) { return XDP_PASS; }")
    try:
        fd = b.load_func(b"other_xdp", BPF.XDP).fd
        att = A.attach_xdp("xr0", fd, "other_xdp")
        try:
            with pytest.raises(DatapathError, match="not ours"):
                dp.attach_rloc_interface("xr0", mode="xdp")
            assert A.xdp_program_id("xr0") == att.prog_id
        finally:
            A.detach_xdp(att)
    finally:
        b.cleanup()
    assert A.xdp_program_id("xr0") == 0


def test_static_runner_rloc_mode_xdp(xlab, pin_root, tmp_path):
    import json
    import subprocess
    import sys

    from tests.datapath.conftest import NS
    root = Path(__file__).resolve().parents[2]
    f = tmp_path / "static.json"
    f.write_text(json.dumps({"local_rlocs": ["198.51.100.1"], "local_eids": ["10.1.0.0/16"]}))
    env = dict(os.environ, PYTHONPATH=str(root / "controller") + os.pathsep + str(root))
    cmd = [sys.executable, "-c",
           f"from pyroute2 import netns; netns.setns({NS!r}); import sys; "
           "from lispctl.datapath.__main__ import main; sys.exit(main(sys.argv[1:]))",
           "--instance", "stx", "--eid-if", "xe0", "--rloc-if", "xr0", "--rloc-mode", "xdp", "--eid-mode", "xdp",
           "--xdp-redirect", "--static", str(f), "--pin-root", str(pin_root)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline().strip()
        assert line == "ready", proc.stderr.read() if proc.poll() is not None else line
        assert A.prog_name_of_id(A.xdp_program_id("xr0")) == "lisp_etr_xdp"
        assert A.prog_name_of_id(A.xdp_program_id("xe0")) == "lisp_itr_xdp"
        # --xdp-redirect: both veths are redirect targets (without it, a veth is none)
        from lispctl.datapath.pinned import PinnedMap
        with PinnedMap(Path(pin_root) / "stx" / "out_devs") as m:
            targets = {int.from_bytes(k, sys.byteorder) for k in m.keys()}
        assert targets == {A.ifindex_of("xe0"), A.ifindex_of("xr0")}
    finally:
        proc.terminate()
        rc = proc.wait(timeout=20)
    err = proc.stderr.read()
    assert rc == 0, err
    assert "xr0: xdp-native" in err and "xe0: xdp-native" in err
    assert A.xdp_program_id("xr0") == 0 and A.xdp_program_id("xe0") == 0, "detached on exit"


def _peer_gro(ns: str, ifname: str, on: bool) -> str:
    """Set GRO on a peer in namespace ns; return the peer's MAC address."""
    from pyroute2 import IPRoute, netns
    netns.pushns(ns)
    try:
        _set_gro(ifname, on)
        with IPRoute() as ipr:
            return ipr.get_links(ipr.link_lookup(ifname=ifname)[0])[0].get_attr("IFLA_ADDRESS")
    finally:
        netns.popns()


@pytest.mark.parametrize("gro", [True, False], ids=["peer-gro-on", "peer-gro-off"])
def test_xdp_modes_redirect_into_veths_whose_peer_takes_it(xtr, gro, caplog):
    """eid-mode = rloc-mode = "xdp" as the daemon attaches them (build.py:
    no xdp_redirect given): a veth whose peer has GRO on is an XDP_REDIRECT
    target, so the XDP ITR and ETR forward the traffic themselves; with GRO
    off on the peer it is not (the kernel would drop redirected frames), one
    warning says what to do, and the traffic takes the tc path."""
    from pyroute2 import IPRoute
    dp = xtr
    host_mac = _peer_gro(HOST_NS, "xe0p", gro)
    remote_mac = _peer_gro(REMOTE_NS, "xr0p", gro)
    with IPRoute() as ipr:     # known neighbours: XDP redirects only to resolved next hops
        for dst, mac, dev in (("10.1.1.10", host_mac, "xe0"), ("198.51.100.2", remote_mac, "xr0")):
            ipr.neigh("add", dst=dst, lladdr=mac, ifindex=ipr.link_lookup(ifname=dev)[0], state=0x80)
    with caplog.at_level(logging.WARNING, logger="lispctl.datapath.datapath"):
        assert dp.attach_eid_interface("xe0", mode="xdp") == "xdp-native"
        assert dp.attach_rloc_interface("xr0", mode="xdp") == "xdp-native"
    warned = [r.getMessage() for r in caplog.records if "XDP_REDIRECT" in r.getMessage()]
    for _ in range(3):
        reply = _ping_across()
        assert reply[12:16] == ip("10.1.1.10").packed and reply[16:20] == ip("10.2.0.5").packed
    c = dp.counters()
    assert c.decapsulated >= 3 and c.encapsulated >= 3
    assert c.total_drops == 0, c.drops
    if gro:
        assert not warned, warned
        assert c.other["xdp_decapsulated"] == c.decapsulated and c.other["xdp_to_stack"] == 0
        assert c.other["xdp_encapsulated"] == c.encapsulated
    else:
        assert len(warned) == 2, warned          # one per interface
        assert "xe0:" in warned[0] and "ethtool -K xe0p gro on" in warned[0]
        assert "xr0:" in warned[1] and "ethtool -K xr0p gro on" in warned[1]
        assert c.other["xdp_to_stack"] == c.other["xdp_decapsulated"]     # to the stack, not redirected
        assert c.other["xdp_encapsulated"] == 0                           # the tc ITR encapsulated
    # the decision, as `lispctl status` shows it (device.info["xdp_redirect"])
    assert dp.xdp_redirects["xe0"]["redirect"] is gro and dp.xdp_redirects["xr0"]["redirect"] is gro
    assert dp.xdp_redirects["xe0"]["peer"] == "xe0p"
    assert dp.xdp_redirects["xe0"]["peer_netns"] == f"/var/run/netns/{HOST_NS}"
    dp.detach()
