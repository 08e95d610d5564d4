"""The pcap/pcapng reader and writer (lispctl.capture), checked against
hand-made files and, where it matters, against tshark's reading of ours."""
import io
import shutil
import struct
import subprocess

import pytest

from lispctl.capture import (CaptureFormatError, Datagram, FrameError, PcapngWriter, PcapWriter,
                             frame, ip_udp, lisp_datagrams, udp_datagrams)
from lispctl.capture.layers import (LINKTYPE_ETHERNET, LINKTYPE_IPV4, LINKTYPE_LINUX_SLL,
                                    LINKTYPE_LINUX_SLL2, LINKTYPE_LOOP, LINKTYPE_NULL, LINKTYPE_RAW,
                                    LINKTYPE_RAW_14)

from tests.conftest import unavailable

V4 = ("192.0.2.1", "198.51.100.2")
V6 = ("2001:db8::1", "2001:db8:1::2")
LINKTYPES = [LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_RAW_14, LINKTYPE_LINUX_SLL,
             LINKTYPE_LINUX_SLL2, LINKTYPE_NULL, LINKTYPE_LOOP]


def _write(path, linktype=LINKTYPE_ETHERNET, **kw):
    f = open(path, "wb")
    return f, PcapWriter(f, linktype, **kw)


@pytest.mark.parametrize("linktype", LINKTYPES)
@pytest.mark.parametrize("addrs", [V4, V6], ids=["v4", "v6"])
@pytest.mark.parametrize("big_endian,nano", [(False, False), (True, True)], ids=["le-us", "be-ns"])
def test_pcap_round_trip_every_link_type(tmp_path, linktype, addrs, big_endian, nano):
    p = tmp_path / "c.pcap"
    f, w = _write(p, linktype, big_endian=big_endian, nanosecond=nano)
    ts = 1_700_000_000_123_456_789
    w.write_udp(*addrs, 4342, 4342, b"\x30payload", ts_ns=ts,
                vlans=(7, 8) if linktype == LINKTYPE_ETHERNET else ())
    w.write_udp(*addrs, 40000, 4341, b"data")
    w.write_udp(*addrs, 40000, 53, b"dns")           # not LISP: filtered out
    w.write_udp(*addrs, 4342, 61000, b"reply")       # answer to an ephemeral port
    f.close()
    got = list(lisp_datagrams(p))
    assert [(d.frame, d.sport, d.dport, d.payload, d.kind) for d in got] == [
        (1, 4342, 4342, b"\x30payload", "control"), (2, 40000, 4341, b"data", "data"),
        (4, 4342, 61000, b"reply", "control")]
    assert (got[0].src, got[0].dst) == addrs
    assert got[0].ts_ns == (ts if nano else ts // 1000 * 1000)
    assert len(list(udp_datagrams(p))) == 4


def test_pcapng_interfaces_link_types_resolution_and_byte_order(tmp_path):
    for big in (False, True):
        p = tmp_path / f"c{big}.pcapng"
        with open(p, "wb") as f:
            w = PcapngWriter(f, big_endian=big)
            eth = w.add_interface(LINKTYPE_ETHERNET)
            sll = w.add_interface(LINKTYPE_LINUX_SLL2, tsresol=9)
            w.write_udp(*V4, 4342, 4342, b"a", interface=sll, ts_ns=1_700_000_000_000_000_007)
            w.write_udp(*V6, 4342, 4342, b"b", interface=eth, ts_ns=1_700_000_000_000_001_000)
        got = list(lisp_datagrams(p))
        assert [(d.frame, d.payload, d.ts_ns, d.src) for d in got] == [
            (1, b"a", 1_700_000_000_000_000_007, V4[0]), (2, b"b", 1_700_000_000_000_001_000, V6[0])]


def _pcapng_blocks(*blocks: tuple[int, bytes]) -> bytes:
    out = b""
    for btype, body in blocks:
        body += b"\0" * (-len(body) % 4)
        out += struct.pack("<II", btype, len(body) + 12) + body + struct.pack("<I", len(body) + 12)
    return out


def test_pcapng_simple_packet_block_and_unknown_blocks(tmp_path):
    pkt = frame(LINKTYPE_RAW, ip_udp(*V4, 4342, 4342, b"spb"))
    data = _pcapng_blocks(
        (0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)),
        (1, struct.pack("<HHI", LINKTYPE_RAW, 0, 0)),
        (5, b"\0" * 8),                                   # interface statistics: ignored
        (3, struct.pack("<I", len(pkt)) + pkt))
    p = tmp_path / "spb.pcapng"
    p.write_bytes(data)
    [d] = lisp_datagrams(p)
    assert d.payload == b"spb" and d.frame == 1


def test_ipv4_options_ipv6_extension_headers_and_padding(tmp_path):
    p = tmp_path / "x.pcap"
    f, w = _write(p, LINKTYPE_RAW)
    v4 = ip_udp(*V4, 4342, 4342, b"opt")
    # IHL 6 with one NOP/EOL option word; the checksum is not verified by design
    v4opt = bytes([0x46]) + v4[1:2] + struct.pack("!H", len(v4) + 4) + v4[4:20] + b"\x01\x01\x01\x00" + v4[20:]
    w.write_frame(v4opt)
    v6 = ip_udp(*V6, 4342, 4342, b"ext")
    hbh = bytes([17, 0]) + b"\x01\x04\0\0\0\0"      # hop-by-hop, PadN, next = UDP
    frag = bytes([0, 0, 0, 0]) + b"\0\0\0\x01"       # first fragment header, next = HBH
    hdr = bytearray(v6[:40])
    hdr[6] = 44
    struct.pack_into("!H", hdr, 4, len(v6) - 40 + len(hbh) + len(frag))
    w.write_frame(bytes(hdr) + frag + hbh + v6[40:])
    w.write_frame(v4 + b"\0" * 12)                      # trailing link padding
    f.close()
    assert [d.payload for d in lisp_datagrams(p)] == [b"opt", b"ext", b"opt"]


def test_non_first_fragments_and_bad_frames_are_reported_not_raised(tmp_path):
    p = tmp_path / "frag.pcap"
    f, w = _write(p, LINKTYPE_RAW)
    v4 = bytearray(ip_udp(*V4, 4342, 4342, b"x" * 32))
    struct.pack_into("!H", v4, 6, 0x2000 | 3)          # offset 24 bytes
    w.write_frame(bytes(v4))
    w.write_frame(b"\x45\x00")                          # truncated IPv4
    w.write_frame(ip_udp(*V4, 4342, 4342, b"ok"))
    udp_short = bytearray(ip_udp(*V4, 4342, 4342, b"ok"))
    struct.pack_into("!H", udp_short, 24, 400)          # UDP length beyond the packet
    w.write_frame(bytes(udp_short))
    w.write_frame(b"\x70" + b"\0" * 30)                 # IP version 7
    f.close()
    got = list(lisp_datagrams(p))
    assert [type(g) for g in got] == [FrameError, FrameError, Datagram, FrameError, FrameError]
    assert "non-first IPv4 fragment (offset 24)" in got[0].reason
    assert got[1].frame == 2 and "truncated IPv4" in got[1].reason
    assert got[2].payload == b"ok" and got[2].frame == 3
    assert "UDP length 400" in got[3].reason


def test_ethernet_non_ip_and_tcp_are_ignored(tmp_path):
    p = tmp_path / "arp.pcap"
    f, w = _write(p)
    w.write_frame(b"\xff" * 12 + b"\x08\x06" + b"\0" * 28)    # ARP
    tcp = bytearray(ip_udp(*V4, 4342, 4342, b"t"))
    tcp[9] = 6
    w.write_frame(frame(LINKTYPE_ETHERNET, bytes(tcp)))
    w.write_udp(*V4, 4342, 4342, b"u")
    f.close()
    assert [(d.frame, d.payload) for d in lisp_datagrams(p)] == [(3, b"u")]


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
@pytest.mark.parametrize("cut", [3, 11, 30])
def test_truncated_file_ends_with_an_error(tmp_path, fmt, cut):
    buf = io.BytesIO()
    w = PcapWriter(buf) if fmt == "pcap" else PcapngWriter(buf)
    if fmt == "pcapng":
        w.add_interface(LINKTYPE_ETHERNET)
    w.write_udp(*V4, 4342, 4342, b"first")
    w.write_udp(*V4, 4342, 4342, b"second" * 10)
    p = tmp_path / f"t.{fmt}"
    p.write_bytes(buf.getvalue()[:-cut])
    got = list(lisp_datagrams(p))
    assert isinstance(got[0], Datagram) and got[0].payload == b"first"
    assert len(got) == 2 and isinstance(got[1], FrameError)
    assert got[1].frame == 2 and "truncated file" in got[1].reason


def test_corrupt_length_stops_with_an_error(tmp_path):
    buf = io.BytesIO()
    w = PcapWriter(buf)
    w.write_udp(*V4, 4342, 4342, b"first")
    data = buf.getvalue() + struct.pack("<IIII", 0, 0, 0x7FFFFFFF, 10) + b"\0" * 40
    p = tmp_path / "c.pcap"
    p.write_bytes(data)
    got = list(lisp_datagrams(p))
    assert isinstance(got[-1], FrameError) and "implausible" in got[-1].reason and len(got) == 2


@pytest.mark.parametrize("content", [b"", b"hello world, not a capture", b"\xd4\xc3\xb2\xa1\x02\x00"])
def test_not_a_capture_raises_format_error(tmp_path, content):
    p = tmp_path / "bad"
    p.write_bytes(content)
    with pytest.raises(CaptureFormatError):
        list(lisp_datagrams(p))
    with pytest.raises(CaptureFormatError, match="cannot read"):
        list(lisp_datagrams(tmp_path / "missing"))


def test_tshark_reads_our_files_with_good_checksums(tmp_path):
    """The writer's IPv4 header and UDP checksums agree with tshark's."""
    if not shutil.which("tshark"):
        unavailable("tshark is not installed")
    p = tmp_path / "ck.pcapng"
    with open(p, "wb") as f:
        w = PcapngWriter(f)
        for lt in (LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2, LINKTYPE_IPV4):
            w.add_interface(lt)
        for i, lt in enumerate((LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2)):
            for addrs in (V4, V6):
                w.write_udp(*addrs, 1000 + i, 9, b"odd-length", interface=i)
        w.write_udp(*V4, 1003, 9, b"x", interface=3)
    out = subprocess.run(
        ["tshark", "-r", str(p), "-o", "udp.check_checksum:TRUE", "-o", "ip.check_checksum:TRUE",
         "-T", "fields", "-e", "udp.srcport", "-e", "udp.checksum.status", "-e", "ip.checksum.status"],
        capture_output=True, text=True, check=True).stdout.split("\n")
    rows = [line.split("\t") for line in out if line]
    assert len(rows) == 7
    # status 1 = "Good" in Wireshark's checksum status enum
    assert all(r[1] == "1" for r in rows), rows
    assert all(r[2] in ("1", "") for r in rows) and sum(r[2] == "1" for r in rows) == 4, rows
