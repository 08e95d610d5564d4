"""EID records and locator records (RFC 9301 section 5.4), request records
(section 5.2) and Map-Referral records (RFC 8111 section 6.4).

Every field is kept, reserved bits included, so encode(decode(b)) == b.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from .addresses import Address, _decode, encode_address
from .errors import MalformedMessage

REQUEST_RECORD_N = 0x80     # RFC 9437 N bit in a Map-Request EID-record's reserved byte
TTL_INFINITE = 0xFFFFFFFF   # Record TTL meaning "never expires"; TTLs are in minutes

_LOC = struct.Struct("!BBBBHH")      # prio, weight, mprio, mweight, flags, AFI
_REC = struct.Struct("!IBBHH")       # ttl, locator count, mask-len, ACT|A|rsvd, rsvd|version
_SIG = struct.Struct("!IIIHHBBH")    # orig TTL, expiration, inception, key tag, sig len, alg, rsvd, rsvd


@dataclass(frozen=True, slots=True)
class LocatorRecord:
    address: Address
    priority: int = 1
    weight: int = 100
    m_priority: int = 255
    m_weight: int = 0
    local: bool = False        # L
    probed: bool = False       # p
    reachable: bool = True     # R
    unused_flags: int = 0      # the 13 bits before L

    def encode(self) -> bytes:
        return _encode_locator(self)


@dataclass(frozen=True, slots=True)
class EidRecord:
    eid: Address
    mask_len: int
    locators: tuple[LocatorRecord, ...] = ()
    ttl: int = 1440            # minutes; TTL_INFINITE = never expires
    act: int = 0               # MapAction value (3 bits)
    authoritative: bool = False
    map_version: int = 0       # 12 bits
    reserved: int = 0          # 12 bits after A
    rsvd: int = 0              # 4 bits before the map-version

    def encode(self) -> bytes:
        return _encode_eid_record(self)


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """An EID record of a Map-Request: reserved byte, mask-len, prefix.
    The reserved byte's top bit is RFC 9437's N (notification requested,
    IANA "Map-Request-Record" header bits, bit 0); `reserved` keeps the
    whole byte so that encode(decode(b)) == b."""
    eid: Address
    mask_len: int
    reserved: int = 0

    @property
    def notify(self) -> bool:
        return bool(self.reserved & REQUEST_RECORD_N)


@dataclass(frozen=True, slots=True)
class Signature:
    """RFC 8111 section 6.4.1 signature section of a Map-Referral record."""
    original_ttl: int
    expiration: int
    inception: int
    key_tag: int
    algorithm: int
    signature: bytes
    reserved: int = 0          # 24 bits after the algorithm


@dataclass(frozen=True, slots=True)
class ReferralRecord:
    """RFC 8111 Map-Referral record; `referrals` use the locator layout."""
    eid: Address
    mask_len: int
    referrals: tuple[LocatorRecord, ...] = ()
    ttl: int = 1440
    act: int = 0               # referral ACT (NODE_REFERRAL ... NOT_AUTHORITATIVE)
    authoritative: bool = False
    incomplete: bool = False   # I
    map_version: int = 0
    signatures: tuple[Signature, ...] = ()
    reserved: int = 0          # 11 bits after I


# ---------------------------------------------------------------- checks

def _check(v: int, bits: int, what: str) -> int:
    if not 0 <= v < (1 << bits):
        raise ValueError(f"{what} {v} does not fit in {bits} bits")
    return v


def check_mask_len(addr: Address, mask_len: int, off: int) -> None:
    if type(addr) is IPv4Address:
        if mask_len > 32:
            raise MalformedMessage(f"mask length {mask_len} too long for IPv4", off)
    elif type(addr) is IPv6Address:
        if mask_len > 128:
            raise MalformedMessage(f"mask length {mask_len} too long for IPv6", off)


# ---------------------------------------------------------------- locators

def decode_locators(buf: bytes, off: int, end: int, count: int) -> tuple[tuple[LocatorRecord, ...], int]:
    out = []
    for _ in range(count):
        if off + 8 > end:
            raise MalformedMessage("truncated locator record", off)
        prio, weight, mprio, mweight, flags, afi = _LOC.unpack_from(buf, off)
        if afi == 1 and off + 12 <= end:   # fast path: the common IPv4 RLOC
            addr = IPv4Address(buf[off + 8:off + 12])
            off += 12
        else:
            addr, off = _decode(buf, off + 6, end, 0)
        out.append(LocatorRecord(addr, prio, weight, mprio, mweight,
                                 bool(flags & 4), bool(flags & 2), bool(flags & 1), flags >> 3))
    return tuple(out), off


def _encode_locator(l: LocatorRecord) -> bytes:
    flags = (_check(l.unused_flags, 13, "unused flags") << 3) | (l.local << 2) | (l.probed << 1) | int(l.reachable)
    try:
        head = _LOC.pack(l.priority, l.weight, l.m_priority, l.m_weight, flags, 0)[:6]
    except struct.error:
        raise ValueError(f"locator priority/weight out of range: {l!r}") from None
    return head + encode_address(l.address)


# ---------------------------------------------------------------- EID records

def decode_eid_records(buf: bytes, off: int, end: int, count: int) -> tuple[tuple[EidRecord, ...], int]:
    out = []
    for _ in range(count):
        rec, off = decode_eid_record(buf, off, end)
        out.append(rec)
    return tuple(out), off


def decode_eid_record(buf: bytes, off: int, end: int) -> tuple[EidRecord, int]:
    if off + 10 > end:
        raise MalformedMessage("truncated EID record", off)
    ttl, nloc, mask_len, w1, w2 = _REC.unpack_from(buf, off)
    eid, p = _decode(buf, off + 10, end, 0)
    check_mask_len(eid, mask_len, off + 5)
    locs, p = decode_locators(buf, p, end, nloc)
    return EidRecord(eid, mask_len, locs, ttl, w1 >> 13, bool(w1 & 0x1000),
                     w2 & 0xFFF, w1 & 0xFFF, w2 >> 12), p


def _encode_eid_record(r: EidRecord) -> bytes:
    if len(r.locators) > 255:
        raise ValueError("more than 255 locators in one EID record")
    w1 = (_check(r.act, 3, "ACT") << 13) | (r.authoritative << 12) | _check(r.reserved, 12, "reserved")
    w2 = (_check(r.rsvd, 4, "rsvd") << 12) | _check(r.map_version, 12, "map-version")
    try:
        head = _REC.pack(r.ttl, len(r.locators), r.mask_len, w1, w2)
    except struct.error:
        raise ValueError(f"EID record TTL or mask length out of range: {r!r}") from None
    return b"".join([head, encode_address(r.eid), *[_encode_locator(l) for l in r.locators]])


def encode_eid_records(records) -> bytes:
    return b"".join([_encode_eid_record(r) for r in records])


# ---------------------------------------------------------------- request records

def decode_request_records(buf: bytes, off: int, end: int, count: int) -> tuple[tuple[RequestRecord, ...], int]:
    out = []
    for _ in range(count):
        if off + 4 > end:
            raise MalformedMessage("truncated request record", off)
        rsvd, mask_len = buf[off], buf[off + 1]
        eid, p = _decode(buf, off + 2, end, 0)
        check_mask_len(eid, mask_len, off + 1)
        out.append(RequestRecord(eid, mask_len, rsvd))
        off = p
    return tuple(out), off


def encode_request_record(r: RequestRecord) -> bytes:
    return bytes((_check(r.reserved, 8, "reserved"), _check(r.mask_len, 8, "mask length"))) + encode_address(r.eid)


# ---------------------------------------------------------------- referral records

def decode_referral_records(buf: bytes, off: int, end: int, count: int) -> tuple[tuple[ReferralRecord, ...], int]:
    out = []
    for _ in range(count):
        if off + 10 > end:
            raise MalformedMessage("truncated referral record", off)
        ttl, nref, mask_len, w1, w2 = _REC.unpack_from(buf, off)
        eid, p = _decode(buf, off + 10, end, 0)
        check_mask_len(eid, mask_len, off + 5)
        refs, p = decode_locators(buf, p, end, nref)
        sigs = []
        for _ in range(w2 >> 12):
            if p + 20 > end:
                raise MalformedMessage("truncated referral signature", p)
            ottl, exp, inc, tag, slen, alg, r1, r2 = _SIG.unpack_from(buf, p)
            if p + 20 + slen > end:
                raise MalformedMessage(f"signature length {slen} exceeds the message", p + 14)
            sigs.append(Signature(ottl, exp, inc, tag, alg, buf[p + 20:p + 20 + slen], (r1 << 16) | r2))
            p += 20 + slen
        out.append(ReferralRecord(eid, mask_len, refs, ttl, w1 >> 13, bool(w1 & 0x1000), bool(w1 & 0x800),
                                  w2 & 0xFFF, tuple(sigs), w1 & 0x7FF))
        off = p
    return tuple(out), off


def encode_referral_record(r: ReferralRecord) -> bytes:
    if len(r.referrals) > 255:
        raise ValueError("more than 255 referrals in one record")
    if len(r.signatures) > 15:
        raise ValueError("more than 15 signatures in one referral record")
    w1 = ((_check(r.act, 3, "ACT") << 13) | (r.authoritative << 12) | (r.incomplete << 11)
          | _check(r.reserved, 11, "reserved"))
    w2 = (len(r.signatures) << 12) | _check(r.map_version, 12, "map-version")
    try:
        parts = [_REC.pack(r.ttl, len(r.referrals), r.mask_len, w1, w2), encode_address(r.eid)]
        parts += [_encode_locator(l) for l in r.referrals]
        for s in r.signatures:
            _check(s.reserved, 24, "signature reserved")
            parts.append(_SIG.pack(s.original_ttl, s.expiration, s.inception, s.key_tag, len(s.signature),
                                   s.algorithm, s.reserved >> 16, s.reserved & 0xFFFF))
            parts.append(bytes(s.signature))
    except struct.error as e:
        raise ValueError(f"referral record field out of range: {e}") from None
    return b"".join(parts)
