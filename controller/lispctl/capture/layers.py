"""Link, IP and UDP headers of captured frames, down to the UDP payload.

`udp_of(linktype, frame)` returns a `Udp`, `None` for frames that are not UDP
(ARP, TCP, ...), or raises `LayerError` with the reason the frame cannot be
followed (truncated header, non-first fragment, unknown link type).
`snapped=True` (the capture kept fewer bytes than were on the wire: snaplen)
accepts IP/UDP lengths beyond what was captured: the payload is what there
is and `Udp.truncated` says how many bytes of it are missing.
"""
from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

LINKTYPE_NULL = 0          # BSD loopback, family in capturing host's byte order
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW_12 = 12       # DLT_RAW on some BSDs
LINKTYPE_RAW_14 = 14       # DLT_RAW on OpenBSD
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108        # OpenBSD loopback, family in network byte order
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

ETH_IPV4, ETH_IPV6 = 0x0800, 0x86DD
_VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)
# AF_INET6 differs per OS; all of these appear in DLT_NULL captures.
_NULL_AF_INET6 = (10, 24, 28, 30)

IPPROTO_UDP = 17
# IPv6 extension headers that use the generic (next, len-in-8-octets) layout.
_IPV6_EXT = {0, 43, 60, 135, 139, 140, 253, 254}
_IPV6_FRAG, _IPV6_AH, _IPV6_NONE = 44, 51, 59


class LayerError(ValueError):
    """A frame whose headers cannot be followed to a UDP payload."""


@dataclass(frozen=True, slots=True)
class Udp:
    src: str
    dst: str
    sport: int
    dport: int
    payload: bytes
    truncated: int = 0        # payload bytes the capture did not keep (snaplen)


def _ip_of(linktype: int, frame: bytes) -> bytes | None:
    """The IP packet inside a link-layer frame; None if it carries no IP."""
    if linktype == LINKTYPE_ETHERNET:
        if len(frame) < 14:
            raise LayerError(f"truncated Ethernet header ({len(frame)} bytes)")
        pos = 12
        ethertype = struct.unpack_from("!H", frame, pos)[0]
        while ethertype in _VLAN_TPIDS:
            pos += 4
            if len(frame) < pos + 2:
                raise LayerError("truncated 802.1Q tag")
            ethertype = struct.unpack_from("!H", frame, pos)[0]
        return frame[pos + 2:] if ethertype in (ETH_IPV4, ETH_IPV6) else None
    if linktype in (LINKTYPE_RAW, LINKTYPE_RAW_12, LINKTYPE_RAW_14, LINKTYPE_IPV4, LINKTYPE_IPV6):
        return frame
    if linktype == LINKTYPE_LINUX_SLL:
        if len(frame) < 16:
            raise LayerError(f"truncated Linux cooked header ({len(frame)} bytes)")
        proto = struct.unpack_from("!H", frame, 14)[0]
        return frame[16:] if proto in (ETH_IPV4, ETH_IPV6) else None
    if linktype == LINKTYPE_LINUX_SLL2:
        if len(frame) < 20:
            raise LayerError(f"truncated Linux cooked v2 header ({len(frame)} bytes)")
        proto = struct.unpack_from("!H", frame, 0)[0]
        return frame[20:] if proto in (ETH_IPV4, ETH_IPV6) else None
    if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        if len(frame) < 4:
            raise LayerError("truncated loopback header")
        orders = "!" if linktype == LINKTYPE_LOOP else "<>"
        for order in orders:
            family = struct.unpack_from(order + "I", frame, 0)[0]
            if family == 2 or family in _NULL_AF_INET6:
                return frame[4:]
        return None
    raise LayerError(f"unsupported link type {linktype}")


def _ipv4(pkt: bytes, snapped: bool = False) -> tuple[str, str, int, bytes] | None:
    if len(pkt) < 20:
        raise LayerError(f"truncated IPv4 header ({len(pkt)} bytes)")
    ihl = (pkt[0] & 0x0F) * 4
    total, frag, proto = struct.unpack_from("!H2xH1xB", pkt, 2)
    if ihl < 20 or len(pkt) < ihl:
        raise LayerError(f"bad IPv4 header length {ihl}")
    if total < ihl:
        raise LayerError(f"IPv4 total length {total} shorter than its header")
    if proto != IPPROTO_UDP:
        return None
    if frag & 0x1FFF:
        raise LayerError(f"non-first IPv4 fragment (offset {(frag & 0x1FFF) * 8}); "
                         "reassembly is not supported")
    if len(pkt) < total and not snapped:
        raise LayerError(f"IPv4 packet truncated: {len(pkt)} of {total} bytes captured")
    src = str(ipaddress.IPv4Address(pkt[12:16]))
    dst = str(ipaddress.IPv4Address(pkt[16:20]))
    # Trim link-layer padding (short Ethernet frames) to the IP total length.
    return src, dst, proto, pkt[ihl:total]


def _ipv6(pkt: bytes, snapped: bool = False) -> tuple[str, str, int, bytes] | None:
    if len(pkt) < 40:
        raise LayerError(f"truncated IPv6 header ({len(pkt)} bytes)")
    plen, nxt = struct.unpack_from("!HB", pkt, 4)
    if plen == 0:           # jumbogram or unknown: take what was captured
        end = len(pkt)
    else:
        end = 40 + plen
        if len(pkt) < end:
            if not snapped:
                raise LayerError(f"IPv6 packet truncated: {len(pkt)} of {end} bytes captured")
            end = len(pkt)
    src = str(ipaddress.IPv6Address(pkt[8:24]))
    dst = str(ipaddress.IPv6Address(pkt[24:40]))
    pos = 40
    while True:
        if nxt == IPPROTO_UDP:
            return src, dst, nxt, pkt[pos:end]
        if nxt == _IPV6_NONE:
            return None
        if end - pos < 8:
            raise LayerError(f"truncated IPv6 extension header {nxt}")
        if nxt in _IPV6_EXT:
            nxt, hlen = pkt[pos], (pkt[pos + 1] + 1) * 8
        elif nxt == _IPV6_AH:
            nxt, hlen = pkt[pos], (pkt[pos + 1] + 2) * 4
        elif nxt == _IPV6_FRAG:
            off = struct.unpack_from("!H", pkt, pos + 2)[0] & 0xFFF8
            if off and pkt[pos] == IPPROTO_UDP:
                raise LayerError(f"non-first IPv6 fragment (offset {off}); "
                                 "reassembly is not supported")
            if off:
                return None
            nxt, hlen = pkt[pos], 8
        else:
            return None     # TCP, ICMPv6, ESP, ...
        pos += hlen
        if pos > end:
            raise LayerError("IPv6 extension header runs past the packet")


def udp_of(linktype: int, frame: bytes, snapped: bool = False) -> Udp | None:
    ip = _ip_of(linktype, frame)
    if not ip:
        return None
    version = ip[0] >> 4
    if version == 4:
        got = _ipv4(ip, snapped)
    elif version == 6:
        got = _ipv6(ip, snapped)
    else:
        raise LayerError(f"IP version {version} in an IP frame")
    if got is None:
        return None
    src, dst, _proto, seg = got
    if len(seg) < 8:
        raise LayerError(f"truncated UDP header ({len(seg)} bytes)")
    sport, dport, ulen = struct.unpack_from("!HHH", seg, 0)
    if snapped and ulen > len(seg):
        return Udp(src, dst, sport, dport, bytes(seg[8:]), ulen - len(seg))
    if ulen < 8 or ulen > len(seg):
        # A zero length is legal only for IPv6 jumbograms; otherwise corrupt.
        if not (ulen == 0 and version == 6):
            raise LayerError(f"UDP length {ulen} does not fit the {len(seg)}-byte segment")
        ulen = len(seg)
    return Udp(src, dst, sport, dport, bytes(seg[8:ulen]))
