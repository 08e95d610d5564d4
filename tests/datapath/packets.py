"""Test packets built with struct (independent of lispctl.wire)."""
from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

ETH_IP, ETH_IP6 = 0x0800, 0x86DD
UDP, TCP, ICMP, ICMP6 = 17, 6, 1, 58


def mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _a(x) -> bytes:
    return ipaddress.ip_address(x).packed


def eth(dst: bytes, src: bytes, proto: int) -> bytes:
    return dst + src + struct.pack("!H", proto)


def ipv4(src, dst, payload: bytes, proto: int = UDP, ttl: int = 64, tos: int = 0, df: bool = True,
         ident: int = 0) -> bytes:
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, tos, 20 + len(payload), ident, 0x4000 if df else 0,
                      ttl, proto, 0, _a(src), _a(dst))
    return hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:] + payload


def ipv6(src, dst, payload: bytes, nh: int = UDP, hlim: int = 64, tc: int = 0, flow: int = 0) -> bytes:
    return struct.pack("!IHBB16s16s", (6 << 28) | (tc << 20) | flow, len(payload), nh, hlim,
                       _a(src), _a(dst)) + payload


def _pseudo(src, dst, proto: int, length: int) -> bytes:
    s, d = _a(src), _a(dst)
    if len(s) == 4:
        return s + d + struct.pack("!BBH", 0, proto, length)
    return s + d + struct.pack("!IxxxB", length, proto)


def udp(src, dst, sport: int, dport: int, payload: bytes) -> bytes:
    hdr = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0)
    c = csum(_pseudo(src, dst, UDP, 8 + len(payload)) + hdr + payload) or 0xFFFF
    return hdr[:6] + struct.pack("!H", c) + payload


def tcp(src, dst, sport: int, dport: int, payload: bytes = b"", flags: int = 0x18) -> bytes:
    hdr = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, flags, 65535, 0, 0)
    c = csum(_pseudo(src, dst, TCP, 20 + len(payload)) + hdr + payload)
    return hdr[:16] + struct.pack("!H", c) + hdr[18:] + payload


def lisp(nonce: int = 0x123456, iid: int | None = None, lsb: int = 1, flags: int | None = None) -> bytes:
    f = flags if flags is not None else (0x80 | 0x40 | (0x08 if iid is not None else 0))
    word = ((iid << 8) | lsb) if iid is not None else lsb
    return struct.pack("!B3sI", f, nonce.to_bytes(3, "big"), word)


def ip_packet(src, dst, payload: bytes = b"hello lisp", sport: int = 1234, dport: int = 80, **kw) -> bytes:
    """An inner UDP packet of the family of src."""
    if ipaddress.ip_address(src).version == 4:
        return ipv4(src, dst, udp(src, dst, sport, dport, payload), **kw)
    return ipv6(src, dst, udp(src, dst, sport, dport, payload), **kw)


def lisp_packet(outer_src, outer_dst, inner: bytes, sport: int = 50000, iid: int | None = None,
                lsb: int = 1, ttl: int = 64, flags: int | None = None) -> bytes:
    """Outer IP + UDP 4341 (checksum 0) + LISP header + inner packet."""
    body = lisp(iid=iid, lsb=lsb, flags=flags) + inner
    u = struct.pack("!HHHH", sport, 4341, 8 + len(body), 0) + body
    if ipaddress.ip_address(outer_src).version == 4:
        return ipv4(outer_src, outer_dst, u, ttl=ttl)
    return ipv6(outer_src, outer_dst, u, hlim=ttl)


@dataclass
class Outer:
    """An encapsulated frame taken apart."""
    dmac: bytes
    smac: bytes
    ethertype: int
    version: int
    src: ipaddress.IPv4Address | ipaddress.IPv6Address
    dst: ipaddress.IPv4Address | ipaddress.IPv6Address
    ttl: int
    tos: int
    ip_header: bytes
    sport: int
    dport: int
    udp_len: int
    udp_csum: int
    lisp_flags: int
    nonce: int
    lisp_word: int
    inner: bytes


def split_encap(frame: bytes) -> Outer:
    dmac, smac, et = frame[:6], frame[6:12], struct.unpack("!H", frame[12:14])[0]
    l3 = frame[14:]
    if l3[0] >> 4 == 4:
        hl = (l3[0] & 0xF) * 4
        iph = l3[:hl]
        src, dst = ipaddress.IPv4Address(iph[12:16]), ipaddress.IPv4Address(iph[16:20])
        ttl, tos, ver = iph[8], iph[1], 4
    else:
        hl = 40
        iph = l3[:40]
        src, dst = ipaddress.IPv6Address(iph[8:24]), ipaddress.IPv6Address(iph[24:40])
        ttl, ver = iph[7], 6
        tos = (struct.unpack("!I", iph[:4])[0] >> 20) & 0xFF
    sport, dport, ulen, uc = struct.unpack("!HHHH", l3[hl:hl + 8])
    flags = l3[hl + 8]
    nonce = int.from_bytes(l3[hl + 9:hl + 12], "big")
    word = struct.unpack("!I", l3[hl + 12:hl + 16])[0]
    return Outer(dmac, smac, et, ver, src, dst, ttl, tos, iph, sport, dport, ulen, uc, flags, nonce, word,
                 l3[hl + 16:])


def hop(pkt: bytes, n: int = 1) -> bytes:
    """pkt as a router forwards it: TTL / hop limit lowered by n (IPv4 header
    checksum recomputed)."""
    b = bytearray(pkt)
    if b[0] >> 4 == 4:
        b[8] -= n
        hl = (b[0] & 0xF) * 4
        b[10:12] = b"\0\0"
        b[10:12] = struct.pack("!H", csum(bytes(b[:hl])))
    else:
        b[7] -= n
    return bytes(b)
