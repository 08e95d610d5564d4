"""Exact output bytes of encapsulation and decapsulation, all four
inner/outer family combinations."""
from __future__ import annotations

import ipaddress
import struct

import pytest

from lispctl.datapath.testrun import TC_ACT_REDIRECT, skb_ctx, run_prog
from lispctl.mapping.types import EidPrefix, Rloc
from tests.datapath import packets as P
from tests.datapath.conftest import EID_MAC, HOST_MAC, PEER_MAC, RLOC_MAC

ip = ipaddress.ip_address

# inner src, inner dst, EID prefix of dst, locator, our RLOC
CASES = {
    "4in4": ("10.1.0.10", "10.2.0.5", "10.2.0.0/16", "192.0.2.2", "192.0.2.1"),
    "6in6": ("fd00:1::10", "fd00:2::5", "fd00:2::/32", "2001:db8:1::2", "2001:db8:1::1"),
    "6in4": ("fd00:1::10", "fd00:3::5", "fd00:3::/32", "192.0.2.3", "192.0.2.1"),
    "4in6": ("10.1.0.10", "10.3.0.5", "10.3.0.0/16", "2001:db8:1::3", "2001:db8:1::1"),
}


def itr_frame(inner: bytes) -> bytes:
    et = P.ETH_IP if inner[0] >> 4 == 4 else P.ETH_IP6
    return P.eth(P.mac(EID_MAC), P.mac(HOST_MAC), et) + inner


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("iid", [0, 0x123456])
def test_encapsulation_exact(dp, lab, case, iid):
    src, dst, prefix, rloc, local = CASES[case]
    eid = EidPrefix.parse(prefix, iid)
    dp.set_mapping(eid, [Rloc(ip(rloc))])
    if iid:
        dp.attach_eid_interface("eid0", iid)
        # the source site in that instance: its locator-status bits are sent
        dp.add_local_eid(EidPrefix.parse("10.1.0.0/16" if ip(src).version == 4 else "fd00:1::/32", iid))
    inner = P.ip_packet(src, dst, b"x" * 100, ttl=61, tos=0xB8) if ip(src).version == 4 else \
        P.ip_packet(src, dst, b"x" * 100, hlim=61, tc=0xB8)
    res = run_prog(dp.prog_fd("lisp_itr_ingress"), itr_frame(inner), ctx=skb_ctx(ifindex=lab.eid_if))
    assert res.retval == TC_ACT_REDIRECT
    o = P.split_encap(res.data)
    assert o.dmac == P.mac(PEER_MAC[rloc]) and o.smac == P.mac(RLOC_MAC)
    assert o.src == ip(local) and o.dst == ip(rloc)
    # the ITR routes the packet: inner TTL 61 - 1, copied to the outer header
    assert o.ttl == 60 and o.tos == 0xB8
    overhead = 8 + 8
    if o.version == 4:
        assert o.ethertype == P.ETH_IP
        tot_len, ident, frag, proto = struct.unpack("!HHHxB", o.ip_header[2:10])
        assert (tot_len, ident, frag, proto) == (20 + overhead + len(inner), 0, 0x4000, 17)
        assert P.csum(o.ip_header) == 0, "outer IPv4 header checksum"
    else:
        assert o.ethertype == P.ETH_IP6
        plen, nh = struct.unpack("!HB", o.ip_header[4:7])
        assert (plen, nh) == (overhead + len(inner), 17)
    assert o.dport == 4341 and 0xC000 <= o.sport <= 0xFFFF
    assert o.udp_len == overhead + len(inner)
    if o.version == 4:
        assert o.udp_csum == 0
    else:
        # computed without touching the payload (see docs/datapath.md): must verify
        l3 = res.data[14:]
        pseudo = l3[8:40] + struct.pack("!I3xB", len(l3) - 40, 17)
        assert o.udp_csum != 0 and P.csum(pseudo + l3[40:]) == 0
    if iid:
        assert o.lisp_flags == 0x80 | 0x40 | 0x08
        assert o.lisp_word == (iid << 8) | 0x01
    else:
        assert o.lisp_flags == 0x80 | 0x40
        assert o.lisp_word == 0x01
    assert o.inner == P.hop(inner)
    assert dp.counters().encapsulated == 1
    assert dp.mapping_counters(eid) == (1, len(inner))


def test_nonce_random_and_source_port_stable(dp, lab):
    dp.set_mapping(EidPrefix.parse("10.2.0.0/16"), [Rloc(ip("192.0.2.2"))])
    frame = itr_frame(P.ip_packet("10.1.0.10", "10.2.0.5"))
    outs = [P.split_encap(run_prog(dp.prog_fd("lisp_itr_ingress"), frame).data) for _ in range(8)]
    assert len({o.nonce for o in outs}) > 1
    assert len({o.sport for o in outs}) == 1
    other = P.split_encap(run_prog(dp.prog_fd("lisp_itr_ingress"),
                                   itr_frame(P.ip_packet("10.1.0.10", "10.2.0.5", sport=999))).data)
    sports = {P.split_encap(run_prog(dp.prog_fd("lisp_itr_ingress"),
                                     itr_frame(P.ip_packet("10.1.0.10", "10.2.0.5", sport=s))).data).sport
              for s in range(1000, 1032)}
    assert len(sports | {other.sport}) > 16, "source port carries flow entropy"


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("iid", [None, 0x10203])
def test_decapsulation_exact(dp, lab, case, iid):
    # reverse direction: remote EID -> our host, from the remote locator to our RLOC
    host, remote, _prefix, rloc, local = CASES[case]
    if iid:
        dp.add_local_eid(EidPrefix.parse("10.1.0.0/16", iid))
        dp.add_local_eid(EidPrefix.parse("fd00:1::/32", iid))
    inner = P.ip_packet(remote, host, b"y" * 64, ttl=50) if ip(host).version == 4 else \
        P.ip_packet(remote, host, b"y" * 64, hlim=50)
    outer = P.lisp_packet(rloc, local, inner, iid=iid, ttl=64)
    et = P.ETH_IP if ip(local).version == 4 else P.ETH_IP6
    frame = P.eth(P.mac(RLOC_MAC), P.mac(PEER_MAC[rloc]), et) + outer
    res = run_prog(dp.prog_fd("lisp_etr_ingress"), frame, ctx=skb_ctx(ifindex=lab.rl_if))
    assert res.retval == TC_ACT_REDIRECT
    inner_et = P.ETH_IP if ip(host).version == 4 else P.ETH_IP6
    # redirected to the site: routed by the ETR, TTL 50 - 1
    assert res.data == P.eth(P.mac(PEER_MAC[host]), P.mac(EID_MAC), inner_et) + P.hop(inner)
    c = dp.counters()
    assert c.decapsulated == 1 and c.total_drops == 0


def test_decap_lowers_inner_ttl_to_outer(dp, lab):
    inner = P.ip_packet("10.2.0.5", "10.1.0.10", ttl=60)
    frame = P.eth(P.mac(RLOC_MAC), P.mac(PEER_MAC["192.0.2.2"]), P.ETH_IP) + \
        P.lisp_packet("192.0.2.2", "192.0.2.1", inner, ttl=5)
    res = run_prog(dp.prog_fd("lisp_etr_ingress"), frame, ctx=skb_ctx(ifindex=lab.rl_if))
    out = res.data[14:]
    assert out[8] == 4              # min(60, 5), then one router hop
    assert P.csum(out[:20]) == 0
    assert out[20:] == inner[20:]


def test_tshark_decodes_without_warnings(dp, lab, tmp_path):
    import shutil
    import subprocess

    from tests.conftest import unavailable
    if not shutil.which("tshark"):
        unavailable("tshark not installed")
    frames = []
    for case in sorted(CASES):
        src, dst, prefix, rloc, _local = CASES[case]
        dp.set_mapping(EidPrefix.parse(prefix, 77), [Rloc(ip(rloc))])
        for inner in (P.ip_packet(src, dst, b"t" * 33),
                      (P.ipv4 if ip(src).version == 4 else P.ipv6)(src, dst, P.tcp(src, dst, 5, 6, b"x"),
                                                                   **({"proto": P.TCP} if ip(src).version == 4
                                                                      else {"nh": P.TCP}))):
            dp.attach_eid_interface("eid0", 77)
            frames.append(run_prog(dp.prog_fd("lisp_itr_ingress"), itr_frame(inner),
                                   ctx=skb_ctx(ifindex=lab.eid_if)).data)
    pcap = tmp_path / "enc.pcap"
    with open(pcap, "wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for fr in frames:
            fh.write(struct.pack("<IIII", 0, 0, len(fr), len(fr)) + fr)
    out = subprocess.run(["tshark", "-r", str(pcap), "-o", "udp.check_checksum:TRUE", "-o", "ip.check_checksum:TRUE",
                          "-o", "tcp.check_checksum:TRUE", "-T", "fields", "-e", "lisp-data.iid",
                          "-e", "_ws.expert"], capture_output=True, text=True, check=True).stdout
    lines = out.strip().splitlines()
    assert len(lines) == len(frames)
    for line in lines:
        iid, _, expert = line.partition("\t")
        assert iid == "77" and expert == "", line


@pytest.mark.parametrize("case", ["4in4", "6in6"])
def test_locator_port_is_the_outer_udp_destination(dp, lab, case):
    """An RTR reaches a NATed xTR at its NAT's translated port (docs/nat.md):
    the locator's port, when set, replaces 4341 (and the IPv6 checksum covers it)."""
    src, dst, prefix, rloc, local = CASES[case]
    dp.set_mapping(EidPrefix.parse(prefix), [Rloc(ip(rloc), port=40123)])
    inner = P.ip_packet(src, dst, b"y" * 64)
    res = run_prog(dp.prog_fd("lisp_itr_ingress"), itr_frame(inner), ctx=skb_ctx(ifindex=lab.eid_if))
    assert res.retval == TC_ACT_REDIRECT
    o = P.split_encap(res.data)
    assert o.dst == ip(rloc) and o.dport == 40123 and o.inner == P.hop(inner)
    # a NAT traversal path: the source port is 4341 for every flow, so the
    # NAT keeps one binding and the RTR's answers match it in reverse
    for sport in (1000, 2000, 3000):
        o = P.split_encap(run_prog(dp.prog_fd("lisp_itr_ingress"),
                                   itr_frame(P.ip_packet(src, dst, b"y" * 64, sport=sport)),
                                   ctx=skb_ctx(ifindex=lab.eid_if)).data)
        assert o.sport == 4341
    if o.version == 6:
        l3 = res.data[14:]
        assert P.csum(P._pseudo(o.src, o.dst, 17, o.udp_len) + l3[40:]) == 0, "outer UDP checksum"
    dp.set_mapping(EidPrefix.parse(prefix), [Rloc(ip(rloc))])      # port 0: 4341 again
    o = P.split_encap(run_prog(dp.prog_fd("lisp_itr_ingress"), itr_frame(inner),
                               ctx=skb_ctx(ifindex=lab.eid_if)).data)
    assert o.dport == 4341 and o.sport >= 0xc000       # hashed source port again
