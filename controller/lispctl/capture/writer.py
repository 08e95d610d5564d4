"""Writing captures: IPv4/IPv6 + UDP packets with correct checksums, framed
for a link type, into pcap or pcapng files. Used by tests and tools that
hand a packet we built to another dissector (tshark)."""
from __future__ import annotations

import ipaddress
import struct
from typing import BinaryIO

from .files import PCAP_MAGIC_NS, PCAP_MAGIC_US, PCAPNG_BOM, PCAPNG_EPB, PCAPNG_IDB, PCAPNG_SHB
from .layers import (ETH_IPV4, ETH_IPV6, LINKTYPE_ETHERNET, LINKTYPE_IPV4, LINKTYPE_IPV6,
                     LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2, LINKTYPE_LOOP, LINKTYPE_NULL,
                     LINKTYPE_RAW, LINKTYPE_RAW_12, LINKTYPE_RAW_14)

_SRC_MAC = bytes.fromhex("020000000001")
_DST_MAC = bytes.fromhex("020000000002")


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ip_udp(src: str, dst: str, sport: int, dport: int, payload: bytes, *,
           ttl: int = 64, ident: int = 0, udp_checksum: bool = True) -> bytes:
    """An IPv4 or IPv6 packet (by the address family of src/dst) carrying UDP.

    udp_checksum=False sends a zero UDP checksum, as LISP data packets do
    over IPv4 (RFC 9300 section 5.3)."""
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if s.version != d.version:
        raise ValueError(f"address families differ: {src} / {dst}")
    ulen = 8 + len(payload)
    if s.version == 4:
        pseudo = s.packed + d.packed + struct.pack("!BBH", 0, 17, ulen)
    else:
        pseudo = s.packed + d.packed + struct.pack("!IxxxB", ulen, 17)
    udp = struct.pack("!HHHH", sport, dport, ulen, 0) + payload
    if udp_checksum or s.version == 6:
        c = _csum(pseudo + udp) or 0xFFFF
        udp = udp[:6] + struct.pack("!H", c) + udp[8:]
    if s.version == 4:
        hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + ulen, ident, 0x4000, ttl, 17, 0,
                          s.packed, d.packed)
        hdr = hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:]
        return hdr + udp
    return struct.pack("!IHBB16s16s", 0x60000000, ulen, 17, ttl, s.packed, d.packed) + udp


def frame(linktype: int, ip: bytes, *, vlans: tuple[int, ...] = ()) -> bytes:
    """Wrap an IP packet in the link-layer header of `linktype`."""
    v6 = ip[0] >> 4 == 6
    ethertype = ETH_IPV6 if v6 else ETH_IPV4
    if linktype == LINKTYPE_ETHERNET:
        tags = b"".join(struct.pack("!HH", 0x8100, vid & 0x0FFF) for vid in vlans)
        return _DST_MAC + _SRC_MAC + tags + struct.pack("!H", ethertype) + ip
    if linktype in (LINKTYPE_RAW, LINKTYPE_RAW_12, LINKTYPE_RAW_14, LINKTYPE_IPV4, LINKTYPE_IPV6):
        return ip
    if linktype == LINKTYPE_LINUX_SLL:
        # packet type 0 (to us), ARPHRD_ETHER, 6-byte address
        return struct.pack("!HHH8sH", 0, 1, 6, _SRC_MAC + b"\0\0", ethertype) + ip
    if linktype == LINKTYPE_LINUX_SLL2:
        return struct.pack("!HHIHBB8s", ethertype, 0, 1, 1, 0, 6, _SRC_MAC + b"\0\0") + ip
    if linktype == LINKTYPE_NULL:
        return struct.pack("<I", 30 if v6 else 2) + ip
    if linktype == LINKTYPE_LOOP:
        return struct.pack("!I", 24 if v6 else 2) + ip
    raise ValueError(f"cannot frame for link type {linktype}")


class PcapWriter:
    """Classic pcap. ts is in nanoseconds; nanosecond=True keeps all of it."""

    def __init__(self, f: BinaryIO, linktype: int = LINKTYPE_ETHERNET, *,
                 nanosecond: bool = False, big_endian: bool = False, snaplen: int = 262144):
        self.f, self.linktype, self.nano = f, linktype, nanosecond
        self.order = ">" if big_endian else "<"
        magic = PCAP_MAGIC_NS if nanosecond else PCAP_MAGIC_US
        f.write(struct.pack(self.order + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype))
        self.count = 0

    def write_frame(self, data: bytes, ts_ns: int | None = None, orig_len: int | None = None) -> int:
        """Write a link-layer frame as is; returns its frame number."""
        self.count += 1
        if ts_ns is None:
            ts_ns = 1_700_000_000_000_000_000 + self.count * 1_000_000
        sec, ns = divmod(ts_ns, 1_000_000_000)
        frac = ns if self.nano else ns // 1000
        self.f.write(struct.pack(self.order + "IIII", sec, frac, len(data),
                                 len(data) if orig_len is None else orig_len) + data)
        return self.count

    def write_udp(self, src: str, dst: str, sport: int, dport: int, payload: bytes, *,
                  ts_ns: int | None = None, vlans: tuple[int, ...] = (), **ip_kw) -> int:
        return self.write_frame(frame(self.linktype, ip_udp(src, dst, sport, dport, payload, **ip_kw),
                                      vlans=vlans), ts_ns)


class PcapngWriter:
    """pcapng with one section and any number of interfaces."""

    def __init__(self, f: BinaryIO, *, big_endian: bool = False):
        self.f = f
        self.order = ">" if big_endian else "<"
        self.ifaces: list[tuple[int, int]] = []       # (linktype, units per second)
        self.count = 0
        self._block(PCAPNG_SHB, struct.pack(self.order + "IHHq", PCAPNG_BOM, 1, 0, -1))

    def _block(self, btype: int, body: bytes) -> None:
        body += b"\0" * (-len(body) % 4)
        n = len(body) + 12
        self.f.write(struct.pack(self.order + "II", btype, n) + body + struct.pack(self.order + "I", n))

    def add_interface(self, linktype: int, *, tsresol: int = 6) -> int:
        """tsresol: negative power of ten of the timestamp unit (6 = us, 9 = ns)."""
        opts = b""
        if tsresol != 6:
            opts = struct.pack(self.order + "HH", 9, 1) + bytes([tsresol]) + b"\0\0\0"
            opts += struct.pack(self.order + "HH", 0, 0)
        self._block(PCAPNG_IDB, struct.pack(self.order + "HHI", linktype, 0, 262144) + opts)
        self.ifaces.append((linktype, 10 ** tsresol))
        return len(self.ifaces) - 1

    def write_frame(self, data: bytes, ts_ns: int | None = None, interface: int = 0) -> int:
        self.count += 1
        if ts_ns is None:
            ts_ns = 1_700_000_000_000_000_000 + self.count * 1_000_000
        ticks = ts_ns * self.ifaces[interface][1] // 1_000_000_000
        self._block(PCAPNG_EPB, struct.pack(self.order + "IIIII", interface, ticks >> 32,
                                            ticks & 0xFFFFFFFF, len(data), len(data)) + data)
        return self.count

    def write_udp(self, src: str, dst: str, sport: int, dport: int, payload: bytes, *,
                  interface: int = 0, ts_ns: int | None = None, vlans: tuple[int, ...] = (),
                  **ip_kw) -> int:
        lt = self.ifaces[interface][0]
        return self.write_frame(frame(lt, ip_udp(src, dst, sport, dport, payload, **ip_kw),
                                      vlans=vlans), ts_ns, interface)
