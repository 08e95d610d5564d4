"""RFC 9300 section 7 (issue 8 item 15), through the real kernel path.

ITR: an IPv4 packet without DF that does not fit the path once encapsulated
is sent as inner fragments, each encapsulated (the destination reassembles),
instead of being refused with frag-needed. The packet enters eid0 from
eid0p (a raw socket, so its checksum is complete), the ITR splits it, and a
packet socket on rl0p sees what left.
"""
from __future__ import annotations

import ipaddress
import socket
import struct
import time

import pytest

from lispctl.mapping.types import EidPrefix, Rloc
from tests.datapath import packets as P
from tests.datapath.conftest import EID_MAC, HOST_MAC
from tests.datapath.conftest import VIA_ITR as DST


def _lisp_frames(cap: socket.socket, want: int, timeout: float = 3.0) -> list[bytes]:
    """Inner packets of the LISP frames seen on the capture socket."""
    out: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(out) < want and time.monotonic() < deadline:
        cap.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            fr = cap.recv(1 << 16)
        except TimeoutError:
            break
        if struct.unpack("!H", fr[12:14])[0] == P.ETH_IP and fr[23] == P.UDP and \
                struct.unpack("!H", fr[36:38])[0] == 4341:
            out.append(fr[14 + 20 + 16:])
    return out


def _reassemble(frags: list[bytes]) -> tuple[bytes, list[tuple[int, int, int]]]:
    """(IPv4 payload, [(offset, MF, length)]) of the fragments of one datagram."""
    parts = []
    for f in frags:
        assert P.csum(f[:20]) == 0, "fragment header checksum"
        fo = struct.unpack("!H", f[6:8])[0]
        assert not fo & 0x4000, "DF stays clear"
        parts.append(((fo & 0x1FFF) * 8, bool(fo & 0x2000), f[20:struct.unpack("!H", f[2:4])[0]]))
    parts.sort()
    data = b""
    for off, _mf, payload in parts:
        assert off == len(data), f"gap or overlap at {off}"
        data += payload
    assert [mf for _, mf, _ in parts] == [True] * (len(parts) - 1) + [False]
    return data, [(o, mf, len(p)) for o, mf, p in parts]


@pytest.mark.parametrize("path_mtu, nfrags", [(1500, 2), (600, 3)])
def test_df_clear_packet_too_big_is_sent_as_inner_fragments(dp, lab, via_itr, path_mtu, nfrags):
    dp.set_path_mtu(path_mtu)
    dp.set_mapping(EidPrefix.parse("10.2.0.0/16"), [Rloc(ipaddress.ip_address("192.0.2.2"))])
    dp.attach_eid_interface("eid0")
    payload = bytes(range(256)) * 6 + b"end" * 20
    udp = P.udp("10.1.0.254", DST, 5555, 9, payload[:1460])
    pkt = P.ipv4("10.1.0.254", DST, udp, df=False, ident=0x1234)
    cap = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    cap.bind(("rl0p", 0))
    with cap, socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as raw:
        raw.sendto(pkt, (DST, 0))
        frags = _lisp_frames(cap, nfrags)
    c = dp.counters()
    assert c.other["icmp_too_big"] == 0 and c.drops["too_big"] == 0
    assert len(frags) == nfrags, (len(frags), c)
    assert c.other["fragmented"] == nfrags - 1 and c.encapsulated == nfrags
    data, layout = _reassemble(frags)
    assert data == udp, layout
    for f in frags:
        assert len(f) + 36 <= path_mtu
        assert f[4:6] == b"\x12\x34" and f[8] == 63, "same id, one router hop"


def test_df_set_still_gets_frag_needed(dp, lab):
    from lispctl.datapath.testrun import TC_ACT_REDIRECT, run_prog
    dp.set_path_mtu(1400)
    dp.set_mapping(EidPrefix.parse("10.2.0.0/16"), [Rloc(ipaddress.ip_address("192.0.2.2"))])
    big = P.ip_packet("10.1.0.10", DST, b"a" * 1400)
    res = run_prog(dp.prog_fd("lisp_itr_ingress"), P.eth(P.mac(EID_MAC), P.mac(HOST_MAC), P.ETH_IP) + big)
    assert res.retval == TC_ACT_REDIRECT and res.data[14 + 20] == 3
    assert dp.counters().other["fragmented"] == 0


# ---------- ETR: outer fragments are reassembled by the stack, then decapsulated ----------

def _frag4(l3: bytes, split: int) -> list[bytes]:
    """Two IPv4 fragments of a datagram (split: payload bytes in the first, multiple of 8)."""
    hdr, payload = bytearray(l3[:20]), l3[20:]
    out = []
    for off, part, mf in ((0, payload[:split], 1), (split, payload[split:], 0)):
        h = bytearray(hdr)
        struct.pack_into("!HHH", h, 2, 20 + len(part), 0x4242, (mf << 13) | (off // 8))
        h[10:12] = b"\0\0"
        h[10:12] = struct.pack("!H", P.csum(bytes(h)))
        out.append(bytes(h) + part)
    return out


def _frag6(l3: bytes, split: int) -> list[bytes]:
    """Two IPv6 fragments (fragment header after the fixed header)."""
    fixed, payload = l3[:40], l3[40:]
    out = []
    for off, part, mf in ((0, payload[:split], 1), (split, payload[split:], 0)):
        fh = struct.pack("!BBHI", P.UDP, 0, off | mf, 0x4242)
        h = bytearray(fixed)
        struct.pack_into("!H", h, 4, len(fh) + len(part))
        h[6] = 44
        out.append(bytes(h) + fh + part)
    return out


@pytest.fixture
def etr_rx(dp, lab):
    """The tc ETR on rl0 and the reassembly receiver, served by a thread."""
    import select
    import threading
    dp.attach_rloc_interface("rl0", complete_checksums=False)
    rx = dp.open_reassembly()
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            ready, _, _ = select.select(rx.fds(), [], [], 0.05)
            for fd in ready:
                rx.handle(fd)
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield rx
    finally:
        stop.set()
        t.join()
        rx.close()


@pytest.mark.parametrize("outer", ["192.0.2.2", "2001:db8:1::2"])
@pytest.mark.parametrize("inner_src, inner_dst", [("10.2.0.5", "10.1.0.10"), ("fd00:2::5", "fd00:1::10")])
def test_outer_fragments_are_reassembled_and_decapsulated(dp, lab, etr_rx, outer, inner_src, inner_dst):
    from tests.datapath.conftest import PEER_MAC, RLOC_MAC
    local = "192.0.2.1" if ":" not in outer else "2001:db8:1::1"
    inner = P.ip_packet(inner_src, inner_dst, bytes(range(200)) * 3, ttl=40) if ":" not in inner_src else \
        P.ip_packet(inner_src, inner_dst, bytes(range(200)) * 3, hlim=40)
    l3 = P.lisp_packet(outer, local, inner, ttl=30)
    frags = _frag4(l3, 304) if ":" not in outer else _frag6(l3, 304)
    et = P.ETH_IP if ":" not in outer else P.ETH_IP6
    cap = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    cap.bind(("eid0p", 0))
    tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    tx.bind(("rl0p", 0))
    with cap, tx:
        for f in frags:
            tx.send(P.eth(P.mac(RLOC_MAC), P.mac(PEER_MAC[outer]), et) + f)
        got = None
        deadline = time.monotonic() + 3
        while got is None and time.monotonic() < deadline:
            cap.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                fr = cap.recv(1 << 16)
            except TimeoutError:
                break
            if fr[14:] [:1] and fr[14] >> 4 == inner[0] >> 4 and len(fr) - 14 >= len(inner) and \
                    fr[14 + (16 if inner[0] >> 4 == 4 else 24):][:4] == inner[(16 if inner[0] >> 4 == 4 else 24):][:4]:
                got = fr[14:14 + len(inner)]
    assert dp.counters().other["frag_to_stack"] == 2
    assert got is not None, dict(etr_rx.counters)
    # min(inner 40, outer 30), one router hop
    assert got == P.hop(P.ip_packet(inner_src, inner_dst, bytes(range(200)) * 3, ttl=30) if ":" not in inner_src
                        else P.ip_packet(inner_src, inner_dst, bytes(range(200)) * 3, hlim=30))
    assert etr_rx.counters["decapsulated"] == 1


def test_reassembled_packets_follow_the_etr_rules():
    """The userspace decision, for what the programs would drop."""
    from lispctl.datapath.reassembled import decapsulate
    inner = P.ip_packet("10.2.0.5", "10.1.0.10")
    ok = (lambda iid: iid == 0), (lambda iid, a: str(a).startswith("10.1."))
    lisp = P.lisp()
    assert decapsulate(lisp + inner, 64, 0, *ok)[1] == "ok"
    assert decapsulate(P.lisp(iid=9) + inner, 64, 0, *ok)[1] == "unknown_iid"
    assert decapsulate(lisp + P.ip_packet("10.2.0.5", "10.9.0.1"), 64, 0, *ok)[1] == "not_local_eid"
    assert decapsulate(lisp + P.ip_packet("10.2.0.5", "10.1.0.10", ttl=0), 64, 0, *ok)[1] == "inner_ttl"
    assert decapsulate(lisp + inner[:-1], 64, 0, *ok)[1] == "malformed"
    assert decapsulate(lisp + inner, 64, 3, *ok)[1] == "ecn"          # CE over not-ECT
    out, _ = decapsulate(lisp + P.ip_packet("10.2.0.5", "10.1.0.10", tos=2), 64, 3, *ok)
    assert out[1] & 3 == 3 and P.csum(out[:20]) == 0


def test_reencapsulation_does_not_split(dp, lab):
    """An RTR's packet came in on an RLOC interface: a clone sent back there
    would meet the ETR, not the ITR, so it gets frag-needed instead."""
    from lispctl.datapath.testrun import TC_ACT_REDIRECT, run_prog, skb_ctx
    from tests.datapath.conftest import PEER_MAC, RLOC_MAC
    dp.set_reencap(True)
    dp.set_path_mtu(1000)
    dp.set_mapping(EidPrefix.parse("10.30.0.0/16"), [Rloc(ipaddress.ip_address("192.0.2.4"))])
    inner = P.ip_packet("10.2.0.5", "10.30.0.1", b"r" * 1200, df=False)
    frame = P.eth(P.mac(RLOC_MAC), P.mac(PEER_MAC["192.0.2.2"]), P.ETH_IP) + \
        P.lisp_packet("192.0.2.2", "192.0.2.1", inner)
    res = run_prog(dp.prog_fd("lisp_etr_ingress"), frame, ctx=skb_ctx(ifindex=lab.rl_if))
    assert res.retval == TC_ACT_REDIRECT and res.data[14 + 20] == 3     # ICMP frag-needed
    c = dp.counters()
    assert c.other["fragmented"] == 0 and c.other["icmp_too_big"] == 1
