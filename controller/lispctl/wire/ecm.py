"""Encapsulated Control Message (RFC 9301 section 5.8, type 8).

ECM header (S, D, E, M flags), then, when S is set, the LISP-SEC
authentication data (RFC 9303 6.1; kept as raw bytes in `auth`, decoded by
lispctl.wire.lispsec), then an inner IPv4 or IPv6 header, a UDP header and
one LISP control message. Decode keeps the inner addresses,
ports and header fields; encode writes a valid IPv4 header checksum and UDP
length, and a UDP checksum for IPv6 (for IPv4 only when `udp_checksum`).

Liberal: inner IP/UDP checksums are not verified (the outer packet was
checked by the kernel; some peers send zero). Strict: no fragments, no IPv6
extension headers, protocol must be UDP, lengths must agree.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv6Address
from typing import Callable

from .errors import MalformedMessage
from .lispsec import decode_ecm_ad, ecm_ad_present

ECM_TYPE = 8
_S, _D, _E, _M = 0x08000000, 0x04000000, 0x02000000, 0x01000000
ECM_RESERVED_MASK = 0x00FFFFFF

_U32 = struct.Struct("!I")
_IP4 = struct.Struct("!BBHHHBBH4s4s")
_IP6 = struct.Struct("!IHBB16s16s")
_UDP = struct.Struct("!HHHH")


def checksum(data: bytes) -> int:
    """Internet checksum (RFC 1071) of data."""
    if len(data) & 1:
        data += b"\x00"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


@dataclass(frozen=True, slots=True)
class EncapsulatedControlMessage:
    message: object                    # the inner control message (any but ECM)
    inner_src: IPv4Address | IPv6Address
    inner_dst: IPv4Address | IPv6Address
    inner_sport: int = 4342
    inner_dport: int = 4342
    security: bool = False             # S (LISP-SEC)
    ddt: bool = False                  # D (DDT-originated)
    to_etr: bool = False               # E (forwarded to ETR)
    to_ms: bool = False                # M (destined to a Map-Server)
    reserved: int = 0                  # the 24 reserved bits, in place
    ttl: int = 64                      # IPv4 TTL / IPv6 hop limit
    tos: int = 0                       # IPv4 TOS / IPv6 traffic class
    ident: int = 0                     # IPv4 identification
    dont_fragment: bool = False        # IPv4 DF
    flow_label: int = 0                # IPv6
    ip_options: bytes = b""            # IPv4 options, kept as sent
    udp_checksum: bool = False         # IPv4: compute one (IPv6 always does)
    trailer: bytes = b""               # bytes after the inner IP packet
    auth: bytes = b""                  # LISP-SEC authentication data (with S), raw
    TYPE = ECM_TYPE

    def encode(self) -> bytes:
        inner = self.message.encode()
        if getattr(self.message, "TYPE", None) == ECM_TYPE:
            raise ValueError("an ECM cannot carry an ECM")
        if self.reserved & ~ECM_RESERVED_MASK:
            raise ValueError("ECM reserved bits outside the 24-bit field")
        if self.auth and not self.security:
            raise ValueError("LISP-SEC authentication data needs the S bit")
        w = (ECM_TYPE << 28) | self.reserved
        if self.security: w |= _S
        if self.ddt: w |= _D
        if self.to_etr: w |= _E
        if self.to_ms: w |= _M
        ulen = 8 + len(inner)
        src, dst = self.inner_src, self.inner_dst
        try:
            if type(src) is IPv4Address and type(dst) is IPv4Address:
                opts = bytes(self.ip_options)
                if len(opts) % 4 or len(opts) > 40:
                    raise ValueError("IPv4 options must be a multiple of 4 bytes, at most 40")
                ihl = 5 + len(opts) // 4
                total = ihl * 4 + ulen
                if total > 0xFFFF:
                    raise ValueError("inner packet too long")
                ucs = 0
                if self.udp_checksum:
                    pseudo = src.packed + dst.packed + struct.pack("!BBH", 0, 17, ulen)
                    ucs = checksum(pseudo + _UDP.pack(self.inner_sport, self.inner_dport, ulen, 0) + inner) or 0xFFFF
                hdr = _IP4.pack(0x40 | ihl, self.tos, total, self.ident, 0x4000 if self.dont_fragment else 0,
                                self.ttl, 17, 0, src.packed, dst.packed) + opts
                hdr = hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:]
            elif type(src) is IPv6Address and type(dst) is IPv6Address:
                if self.ip_options or self.ident or self.dont_fragment:
                    raise ValueError("IPv4-only fields set on an IPv6 ECM")
                if ulen > 0xFFFF:
                    raise ValueError("inner packet too long")
                if not 0 <= self.flow_label < 1 << 20 or not 0 <= self.tos <= 255:
                    raise ValueError("flow label / traffic class out of range")
                pseudo = src.packed + dst.packed + struct.pack("!IxxxB", ulen, 17)
                ucs = checksum(pseudo + _UDP.pack(self.inner_sport, self.inner_dport, ulen, 0) + inner) or 0xFFFF
                hdr = _IP6.pack((6 << 28) | (self.tos << 20) | self.flow_label, ulen, 17, self.ttl,
                                src.packed, dst.packed)
            else:
                raise ValueError("inner source and destination must both be IPv4 or both IPv6")
            udp = _UDP.pack(self.inner_sport, self.inner_dport, ulen, ucs)
        except struct.error as e:
            raise ValueError(f"ECM inner header field out of range: {e}") from None
        return b"".join([_U32.pack(w), bytes(self.auth), hdr, udp, inner, bytes(self.trailer)])


def decode_ecm(buf: bytes, decode_inner: Callable[[bytes], object]) -> EncapsulatedControlMessage:
    """Decode an ECM; `decode_inner` decodes the inner LISP message (it must
    reject a nested ECM). Offsets in errors are relative to the ECM start.

    With the S bit, LISP-SEC authentication data may sit between the header
    and the inner IP header: its first byte (AD type 1) cannot start an IPv4
    or IPv6 header, so an S bit without AD (older peers) is still decoded."""
    if len(buf) >= 5 and buf[0] & 0x08 and ecm_ad_present(buf, 4):
        _, end = decode_ecm_ad(buf, 4)
        try:
            ecm = _decode_plain_ecm(buf[:4] + buf[end:], decode_inner)
        except MalformedMessage as e:
            raise MalformedMessage(e.reason, e.offset + end - 4 if e.offset >= 4 else e.offset) from None
        return _with_auth(ecm, bytes(buf[4:end]))
    return _decode_plain_ecm(buf, decode_inner)


def _with_auth(ecm: EncapsulatedControlMessage, auth: bytes) -> EncapsulatedControlMessage:
    return replace(ecm, auth=auth)


def _decode_plain_ecm(buf: bytes, decode_inner: Callable[[bytes], object]) -> EncapsulatedControlMessage:
    n = len(buf)
    if n < 4:
        raise MalformedMessage("truncated ECM header", 0)
    w = _U32.unpack_from(buf, 0)[0]
    if n < 5:
        raise MalformedMessage("truncated inner IP header", 4)
    ver = buf[4] >> 4
    opts = b""
    ident = 0
    df = False
    flow = 0
    if ver == 4:
        if n < 24:
            raise MalformedMessage("truncated inner IPv4 header", 4)
        vihl, tos, total, ident, frag, ttl, proto, _, s, d = _IP4.unpack_from(buf, 4)
        hlen = (vihl & 0xF) * 4
        if hlen < 20:
            raise MalformedMessage(f"inner IPv4 header length {hlen} below 20", 4)
        if 4 + hlen > n:
            raise MalformedMessage("truncated inner IPv4 options", 24)
        if frag & 0x3FFF:
            raise MalformedMessage("fragmented inner IPv4 packet", 10)
        if proto != 17:
            raise MalformedMessage(f"inner IPv4 protocol {proto} is not UDP", 13)
        if total < hlen + 8:
            raise MalformedMessage(f"inner IPv4 total length {total} too short", 6)
        if 4 + total > n:
            raise MalformedMessage(f"inner IPv4 total length {total} exceeds the message", 6)
        opts = buf[24:4 + hlen]
        df = bool(frag & 0x4000)
        src, dst = IPv4Address(s), IPv4Address(d)
        udp_off = 4 + hlen
        ip_end = 4 + total
    elif ver == 6:
        if n < 44:
            raise MalformedMessage("truncated inner IPv6 header", 4)
        vtf, plen, nxt, ttl, s, d = _IP6.unpack_from(buf, 4)
        if nxt != 17:
            raise MalformedMessage(f"inner IPv6 next header {nxt} is not UDP", 10)
        if plen < 8:
            raise MalformedMessage(f"inner IPv6 payload length {plen} too short", 8)
        if 44 + plen > n:
            raise MalformedMessage(f"inner IPv6 payload length {plen} exceeds the message", 8)
        tos = (vtf >> 20) & 0xFF
        flow = vtf & 0xFFFFF
        src, dst = IPv6Address(s), IPv6Address(d)
        udp_off = 44
        ip_end = 44 + plen
    else:
        raise MalformedMessage(f"inner IP version {ver}", 4)
    sport, dport, ulen, ucs = _UDP.unpack_from(buf, udp_off)
    if ulen != ip_end - udp_off:
        raise MalformedMessage(f"inner UDP length {ulen} does not match the IP length {ip_end - udp_off}",
                               udp_off + 4)
    try:
        msg = decode_inner(buf[udp_off + 8:ip_end])
    except MalformedMessage as e:
        raise MalformedMessage(e.reason, e.offset + udp_off + 8 if e.offset >= 0 else e.offset) from None
    return EncapsulatedControlMessage(
        msg, src, dst, sport, dport, bool(w & _S), bool(w & _D), bool(w & _E), bool(w & _M),
        w & ECM_RESERVED_MASK, ttl, tos, ident, df, flow, opts, ver == 4 and ucs != 0, buf[ip_end:])
