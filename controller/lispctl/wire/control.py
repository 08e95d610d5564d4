"""LISP control messages other than ECM (RFC 9301 section 5, RFC 9437,
RFC 8111, draft-ietf-lisp-nat-traversal, RFC 9304).

Each message class is a frozen, slotted dataclass with `encode()`. Flag
fields are booleans; `reserved` keeps the reserved bits of the first 32-bit
word *in place* (masked, not shifted) so that encode(decode(b)) == b even
for peers that set bits we do not interpret. `trailer` keeps bytes after the
last field (real peers append xTR-IDs without the I bit); it is re-emitted.
Bits that a class derives from its fields (M, I, IRC, counts, lengths) are
not separate fields.
"""
from __future__ import annotations

import struct
from dataclasses import KW_ONLY, dataclass

from .addresses import NO_ADDRESS, Address, _decode, encode_address
from .errors import MalformedMessage
from .records import (EidRecord, ReferralRecord, RequestRecord, decode_eid_record, decode_eid_records,
                      decode_referral_records, decode_request_records, encode_eid_records,
                      encode_referral_record, encode_request_record)

MAP_REQUEST = 1
MAP_REPLY = 2
MAP_REGISTER = 3
MAP_NOTIFY = 4
MAP_NOTIFY_ACK = 5
MAP_REFERRAL = 6
INFO = 7
ECM = 8
SHARED_EXTENSION = 15

# Auth data length on the wire per algorithm ID: the FULL HMAC output
# (PROTOCOL-NOTES: peers drop truncated MACs).
ALG_NONE = 0
ALG_HMAC_SHA1 = 1
ALG_HMAC_SHA256 = 2
AUTH_DATA_LENGTHS: dict[int, int] = {ALG_NONE: 0, ALG_HMAC_SHA1: 20, ALG_HMAC_SHA256: 32}

_HDR = struct.Struct("!IQ")           # first word, nonce
_AUTH_HDR = struct.Struct("!IQBBH")   # first word, nonce, key id, alg id, auth length
_XTR = struct.Struct("!QQQ")          # xTR-ID (hi, lo), site-ID
_U32 = struct.Struct("!I")
_U16 = struct.Struct("!H")
_TTL_EID = struct.Struct("!IBB")      # Info: TTL, reserved, EID mask-len

_U64 = (1 << 64) - 1


def _check_word(reserved: int, mask: int, what: str) -> int:
    if reserved & ~mask:
        raise ValueError(f"{what}: reserved bits {reserved:#x} outside mask {mask:#x}")
    return reserved


def _nonce(n: int) -> int:
    if not 0 <= n <= _U64:
        raise ValueError(f"nonce {n} is not a 64-bit value")
    return n


def _xtr_bytes(xtr_id: int, site_id: int | None) -> bytes:
    if not 0 <= xtr_id < 1 << 128:
        raise ValueError("xTR-ID is a 128-bit value")
    site = site_id or 0
    if not 0 <= site <= _U64:
        raise ValueError("site-ID is a 64-bit value")
    return _XTR.pack(xtr_id >> 64, xtr_id & _U64, site)


def _read_xtr(buf: bytes, off: int, end: int) -> tuple[int, int, int]:
    if off + 24 > end:
        raise MalformedMessage("truncated xTR-ID/site-ID", off)
    hi, lo, site = _XTR.unpack_from(buf, off)
    return (hi << 64) | lo, site, off + 24


def _auth_len(alg_id: int, alen: int, off: int) -> None:
    want = AUTH_DATA_LENGTHS.get(alg_id)
    if want is None:
        raise MalformedMessage(f"unknown authentication algorithm {alg_id}", off)
    if alen != want:
        raise MalformedMessage(f"auth data length {alen} does not match algorithm {alg_id} ({want})", off + 1)


def _encode_authed(w: int, m, body: list) -> bytes:
    """The layout every authenticated message shares: first word, nonce, Key ID,
    Algorithm ID, auth data length, auth data, then body, then m.trailer."""
    if len(m.auth_data) > 0xFFFF:
        raise ValueError("auth data exceeds 65535 bytes")
    try:
        head = _AUTH_HDR.pack(w, _nonce(m.nonce), m.key_id, m.alg_id, len(m.auth_data))
    except struct.error:
        raise ValueError(f"key ID {m.key_id} / algorithm ID {m.alg_id} must be 8-bit values") from None
    return b"".join([head, bytes(m.auth_data), *body, bytes(m.trailer)])


def _encode_registration(w: int, m, tail: bytes = b"") -> bytes:
    """Map-Register, Map-Notify, Map-Notify-Ack: w holds type, flags and
    reserved bits except I; then records, xTR-ID/site-ID, tail."""
    if len(m.records) > 255:
        raise ValueError("more than 255 records")
    body = [encode_eid_records(m.records)]
    if m.xtr_id is not None:
        body.append(_xtr_bytes(m.xtr_id, m.site_id))
    if tail:
        body.append(tail)
    return _encode_authed(w | len(m.records), m, body)


def _decode_authed(buf: bytes, what: str, i_bit: int | None):
    """(w, nonce, key_id, alg_id, auth_data, records, xtr_id, site_id, offset)
    of an authenticated message. i_bit is where the type keeps I: records and
    xTR-ID/site-ID follow the auth data (Map-Register/Notify/Notify-Ack); None
    reads the header only (Info)."""
    end = len(buf)
    if end < 16:
        raise MalformedMessage(f"truncated {what} header", 0)
    w, nonce, key_id, alg_id, alen = _AUTH_HDR.unpack_from(buf, 0)
    if AUTH_DATA_LENGTHS.get(alg_id) != alen:
        _auth_len(alg_id, alen, 13)
    off = 16 + alen
    if off > end:
        raise MalformedMessage("truncated authentication data", 16)
    if i_bit is None:
        return w, nonce, key_id, alg_id, buf[16:off], (), None, None, off
    recs, p = decode_eid_records(buf, off, end, w & 0xFF)
    if w & i_bit:
        xtr, site, p = _read_xtr(buf, p, end)
        return w, nonce, key_id, alg_id, buf[16:off], recs, xtr, site, p
    return w, nonce, key_id, alg_id, buf[16:off], recs, None, None, p


class _Message:
    __slots__ = ()
    TYPE = 0


# ---------------------------------------------------------------- Map-Request

_MREQ_A, _MREQ_M, _MREQ_P, _MREQ_S = 0x08000000, 0x04000000, 0x02000000, 0x01000000
# I (RFC 9437 section 4: xTR-ID bit, bit 11 of the first word); the N bit of
# RFC 9437 is not in this header but in each EID-record (RequestRecord.notify).
_MREQ_p, _MREQ_s, _MREQ_I = 0x00800000, 0x00400000, 0x00100000
_MREQ_L, _MREQ_D = 0x00004000, 0x00002000
MAP_REQUEST_RESERVED_MASK = 0x002F8000


@dataclass(frozen=True, slots=True)
class MapRequest(_Message):
    """RFC 9301 5.2 + RFC 9437 (I: xTR-ID/site-ID appended; N: per record,
    RequestRecord.notify). M is set iff map_reply_record is given, I iff
    xtr_id is. site_id None with an xtr_id: the 64-bit site-ID is left out
    (lispers.net sends a bare 128-bit xTR-ID). A request whose I bit promises
    an xTR-ID that is not all there decodes as a plain Map-Request with the
    leftover bytes in `trailer` (answered, never subscribed)."""
    nonce: int
    records: tuple[RequestRecord, ...]
    itr_rlocs: tuple[Address, ...]
    source_eid: Address = NO_ADDRESS
    authoritative: bool = False        # A
    probe: bool = False                # P
    smr: bool = False                  # S
    pitr: bool = False                 # p
    smr_invoked: bool = False          # s
    local_xtr: bool = False            # L (RFC 9301)
    dont_map_reply: bool = False       # D (RFC 9301)
    map_reply_record: EidRecord | None = None
    xtr_id: int | None = None
    site_id: int | None = None
    reserved: int = 0
    trailer: bytes = b""
    TYPE = MAP_REQUEST

    @property
    def notification_requested(self) -> bool:
        """RFC 9437: some EID-record asks to be notified (its N bit)."""
        return any(r.notify for r in self.records)

    def encode(self) -> bytes:
        n_itr = len(self.itr_rlocs)
        if not 1 <= n_itr <= 32:
            raise ValueError(f"a Map-Request carries 1..32 ITR-RLOCs, not {n_itr}")
        if len(self.records) > 255:
            raise ValueError("more than 255 records")
        w = ((MAP_REQUEST << 28) | _check_word(self.reserved, MAP_REQUEST_RESERVED_MASK, "Map-Request")
             | ((n_itr - 1) << 8) | len(self.records))
        if self.authoritative: w |= _MREQ_A
        if self.map_reply_record is not None: w |= _MREQ_M
        if self.probe: w |= _MREQ_P
        if self.smr: w |= _MREQ_S
        if self.pitr: w |= _MREQ_p
        if self.smr_invoked: w |= _MREQ_s
        if self.xtr_id is not None: w |= _MREQ_I
        if self.local_xtr: w |= _MREQ_L
        if self.dont_map_reply: w |= _MREQ_D
        parts = [_HDR.pack(w, _nonce(self.nonce)), encode_address(self.source_eid)]
        parts += [encode_address(a) for a in self.itr_rlocs]
        parts += [encode_request_record(r) for r in self.records]
        if self.map_reply_record is not None:
            parts.append(self.map_reply_record.encode())
        if self.xtr_id is not None:
            xtr = _xtr_bytes(self.xtr_id, self.site_id)
            if self.site_id is None:
                if len(self.trailer) >= 8:
                    raise ValueError("an xTR-ID without site-ID cannot be followed by a trailer of 8+ bytes")
                xtr = xtr[:16]
            parts.append(xtr)
        parts.append(bytes(self.trailer))
        return b"".join(parts)


def _decode_map_request(buf: bytes) -> MapRequest:
    end = len(buf)
    if end < 12:
        raise MalformedMessage("truncated Map-Request header", 0)
    w, nonce = _HDR.unpack_from(buf, 0)
    src, off = _decode(buf, 12, end, 0)
    itrs = []
    for _ in range(((w >> 8) & 0x1F) + 1):
        a, off = _decode(buf, off, end, 0)
        itrs.append(a)
    recs, off = decode_request_records(buf, off, end, w & 0xFF)
    mrec = None
    if w & _MREQ_M:
        mrec, off = decode_eid_record(buf, off, end)
    xtr = site = None
    if w & _MREQ_I:
        if off + 24 <= end:
            xtr, site, off = _read_xtr(buf, off, end)
        elif off + 16 <= end:          # xTR-ID without site-ID (lispers.net)
            hi, lo = struct.unpack_from("!QQ", buf, off)
            xtr, off = (hi << 64) | lo, off + 16
        # else: truncated; a plain Map-Request, the bytes stay in the trailer
    return MapRequest(nonce, recs, tuple(itrs), src, bool(w & _MREQ_A), bool(w & _MREQ_P),
                      bool(w & _MREQ_S), bool(w & _MREQ_p), bool(w & _MREQ_s),
                      bool(w & _MREQ_L), bool(w & _MREQ_D), mrec, xtr, site,
                      w & MAP_REQUEST_RESERVED_MASK, buf[off:])


# ---------------------------------------------------------------- Map-Reply

_MREP_P, _MREP_E, _MREP_S = 0x08000000, 0x04000000, 0x02000000
MAP_REPLY_RESERVED_MASK = 0x01FFFF00


@dataclass(frozen=True, slots=True)
class MapReply(_Message):
    """RFC 9301 5.4."""
    nonce: int
    records: tuple[EidRecord, ...]
    probe: bool = False                # P
    echo_nonce_capable: bool = False   # E
    security: bool = False             # S (LISP-SEC)
    reserved: int = 0
    trailer: bytes = b""
    TYPE = MAP_REPLY

    def encode(self) -> bytes:
        if len(self.records) > 255:
            raise ValueError("more than 255 records")
        w = ((MAP_REPLY << 28) | _check_word(self.reserved, MAP_REPLY_RESERVED_MASK, "Map-Reply")
             | len(self.records))
        if self.probe: w |= _MREP_P
        if self.echo_nonce_capable: w |= _MREP_E
        if self.security: w |= _MREP_S
        return b"".join([_HDR.pack(w, _nonce(self.nonce)), encode_eid_records(self.records),
                         bytes(self.trailer)])


def _decode_map_reply(buf: bytes) -> MapReply:
    end = len(buf)
    if end < 12:
        raise MalformedMessage("truncated Map-Reply header", 0)
    w, nonce = _HDR.unpack_from(buf, 0)
    recs, off = decode_eid_records(buf, 12, end, w & 0xFF)
    return MapReply(nonce, recs, bool(w & _MREP_P), bool(w & _MREP_E), bool(w & _MREP_S),
                    w & MAP_REPLY_RESERVED_MASK, buf[off:])


# ---------------------------------------------------------------- Map-Register

# R ("built for an RTR", draft-ietf-lisp-nat-traversal) sits after I, where
# Wireshark decodes it (lisp.mreg.flags.rtr); RFC 9301 shows it as reserved.
_MREG_P, _MREG_S, _MREG_I, _MREG_R, _MREG_M = 0x08000000, 0x04000000, 0x02000000, 0x01000000, 0x00000100
MAP_REGISTER_RESERVED_MASK = 0x00FFFE00


@dataclass(frozen=True, slots=True)
class MapRegister(_Message):
    """RFC 9301 5.6 (Key ID and Algorithm ID are separate bytes). I is set
    iff xtr_id is given; xTR-ID (128 bits) and site-ID (64 bits) follow the records."""
    nonce: int
    records: tuple[EidRecord, ...]
    key_id: int = 0
    alg_id: int = ALG_NONE
    auth_data: bytes = b""
    proxy_reply: bool = False          # P
    security: bool = False             # S
    want_map_notify: bool = False      # M
    xtr_id: int | None = None
    site_id: int | None = None
    reserved: int = 0
    trailer: bytes = b""
    rtr: bool = False                  # R (draft-ietf-lisp-nat-traversal), after trailer: new
    TYPE = MAP_REGISTER

    def encode(self) -> bytes:
        w = (MAP_REGISTER << 28) | _check_word(self.reserved, MAP_REGISTER_RESERVED_MASK, "Map-Register")
        if self.proxy_reply: w |= _MREG_P
        if self.security: w |= _MREG_S
        if self.xtr_id is not None: w |= _MREG_I
        if self.rtr: w |= _MREG_R
        if self.want_map_notify: w |= _MREG_M
        return _encode_registration(w, self)


def _decode_map_register(buf: bytes) -> MapRegister:
    w, nonce, key_id, alg_id, auth, recs, xtr, site, off = _decode_authed(buf, "Map-Register", _MREG_I)
    return MapRegister(nonce, recs, key_id, alg_id, auth, bool(w & _MREG_P), bool(w & _MREG_S),
                       bool(w & _MREG_M), xtr, site, w & MAP_REGISTER_RESERVED_MASK, buf[off:], bool(w & _MREG_R))


# ---------------------------------------------------------------- Map-Notify / Ack

# The I and R bits sit right after the type, as Wireshark and tcpdump decode
# them (lispers.net NAT traversal); RFC 9301 shows these bits as reserved.
_MNOT_I, _MNOT_R = 0x08000000, 0x04000000
MAP_NOTIFY_RESERVED_MASK = 0x03FFFF00
_MS_RTR = struct.Struct("!HH")        # MS-RTR Key ID, MS-RTR auth data length


@dataclass(frozen=True, slots=True)
class MapNotify(_Message):
    """RFC 9301 5.7: Map-Register layout; I bit means xTR-ID/site-ID follow
    the records. R marks a notify sent by a Map-Server to an RTR on behalf of
    an xTR (draft-ietf-lisp-nat-traversal): after the xTR-ID/site-ID it
    carries the MS-RTR Key ID (16 bits), auth data length (16 bits) and auth
    data, present iff ms_rtr_key_id is not None (which needs rtr)."""
    nonce: int
    records: tuple[EidRecord, ...]
    key_id: int = 0
    alg_id: int = ALG_NONE
    auth_data: bytes = b""
    rtr: bool = False                  # R
    xtr_id: int | None = None
    site_id: int | None = None
    reserved: int = 0
    trailer: bytes = b""
    _: KW_ONLY
    ms_rtr_key_id: int | None = None
    ms_rtr_auth_data: bytes = b""
    TYPE = MAP_NOTIFY

    def encode(self) -> bytes:
        w = (self.TYPE << 28) | _check_word(self.reserved, MAP_NOTIFY_RESERVED_MASK, type(self).__name__)
        if self.xtr_id is not None: w |= _MNOT_I
        if not self.rtr:
            if self.ms_rtr_key_id is not None or self.ms_rtr_auth_data:
                raise ValueError("MS-RTR authentication is only carried with the R bit (rtr=True)")
            return _encode_registration(w, self)
        w |= _MNOT_R
        if self.ms_rtr_key_id is None:
            if self.ms_rtr_auth_data or self.trailer:
                # a decoder would read these bytes as the MS-RTR fields
                raise ValueError("an R Map-Notify with auth data or a trailer needs ms_rtr_key_id")
            return _encode_registration(w, self)
        if len(self.ms_rtr_auth_data) > 0xFFFF:
            raise ValueError("MS-RTR auth data exceeds 65535 bytes")
        try:
            ms_rtr = _MS_RTR.pack(self.ms_rtr_key_id, len(self.ms_rtr_auth_data))
        except struct.error:
            raise ValueError(f"MS-RTR key ID {self.ms_rtr_key_id} is not a 16-bit value") from None
        return _encode_registration(w, self, ms_rtr + bytes(self.ms_rtr_auth_data))


@dataclass(frozen=True, slots=True)
class MapNotifyAck(_Message):
    """RFC 9301 5.7, type 5: same layout as Map-Notify."""
    nonce: int
    records: tuple[EidRecord, ...] = ()
    key_id: int = 0
    alg_id: int = ALG_NONE
    auth_data: bytes = b""
    rtr: bool = False
    xtr_id: int | None = None
    site_id: int | None = None
    reserved: int = 0
    trailer: bytes = b""
    _: KW_ONLY
    ms_rtr_key_id: int | None = None
    ms_rtr_auth_data: bytes = b""
    TYPE = MAP_NOTIFY_ACK

    encode = MapNotify.encode


def _decode_map_notify(buf: bytes, cls=MapNotify):
    w, nonce, key_id, alg_id, auth, recs, xtr, site, off = _decode_authed(buf, cls.__name__, _MNOT_I)
    rtr = bool(w & _MNOT_R)
    if rtr and off < len(buf):
        # R: MS-RTR authentication follows (nothing at all is accepted too:
        # an R notify without it, as this codec used to write them)
        if off + 4 > len(buf):
            raise MalformedMessage("truncated MS-RTR authentication", off)
        ms_key, ms_len = _MS_RTR.unpack_from(buf, off)
        if off + 4 + ms_len > len(buf):
            raise MalformedMessage(f"MS-RTR auth data length {ms_len} exceeds the message", off + 2)
        return cls(nonce, recs, key_id, alg_id, auth, True, xtr, site, w & MAP_NOTIFY_RESERVED_MASK,
                   buf[off + 4 + ms_len:], ms_rtr_key_id=ms_key, ms_rtr_auth_data=buf[off + 4:off + 4 + ms_len])
    return cls(nonce, recs, key_id, alg_id, auth, rtr, xtr, site, w & MAP_NOTIFY_RESERVED_MASK, buf[off:])


# ---------------------------------------------------------------- Map-Referral

MAP_REFERRAL_RESERVED_MASK = 0x0FFFFF00


@dataclass(frozen=True, slots=True)
class MapReferral(_Message):
    """RFC 8111 6.4."""
    nonce: int
    records: tuple[ReferralRecord, ...]
    reserved: int = 0
    trailer: bytes = b""
    TYPE = MAP_REFERRAL

    def encode(self) -> bytes:
        if len(self.records) > 255:
            raise ValueError("more than 255 records")
        w = ((MAP_REFERRAL << 28) | _check_word(self.reserved, MAP_REFERRAL_RESERVED_MASK, "Map-Referral")
             | len(self.records))
        return b"".join([_HDR.pack(w, _nonce(self.nonce)), *[encode_referral_record(r) for r in self.records],
                         bytes(self.trailer)])


def _decode_map_referral(buf: bytes) -> MapReferral:
    end = len(buf)
    if end < 12:
        raise MalformedMessage("truncated Map-Referral header", 0)
    w, nonce = _HDR.unpack_from(buf, 0)
    recs, off = decode_referral_records(buf, 12, end, w & 0xFF)
    return MapReferral(nonce, recs, w & MAP_REFERRAL_RESERVED_MASK, buf[off:])


# ---------------------------------------------------------------- Info-Request / Info-Reply

_INFO_R = 0x08000000
INFO_RESERVED_MASK = 0x07FFFFFF


def _encode_info(m, reply: bool, last: Address | None) -> bytes:
    w = (INFO << 28) | _check_word(m.reserved, INFO_RESERVED_MASK, type(m).__name__)
    if reply:
        w |= _INFO_R
    try:
        body = [_TTL_EID.pack(m.ttl, m.eid_reserved, m.eid_mask_len)]
    except struct.error:
        raise ValueError("Info TTL / reserved / mask length out of range") from None
    body.append(encode_address(m.eid_prefix))
    if last is not None:
        body.append(encode_address(last))
    return _encode_authed(w, m, body)


@dataclass(frozen=True, slots=True)
class InfoRequest(_Message):
    """draft-ietf-lisp-nat-traversal Info-Request (type 7, R=0). `address` is
    the final AFI field (AFI 0 normally; None when a peer omitted it)."""
    nonce: int
    eid_prefix: Address
    eid_mask_len: int
    key_id: int = 0
    alg_id: int = ALG_NONE
    auth_data: bytes = b""
    ttl: int = 0                       # minutes
    address: Address | None = NO_ADDRESS
    eid_reserved: int = 0
    reserved: int = 0
    trailer: bytes = b""
    TYPE = INFO

    def encode(self) -> bytes:
        return _encode_info(self, False, self.address)


@dataclass(frozen=True, slots=True)
class InfoReply(_Message):
    """draft-ietf-lisp-nat-traversal Info-Reply (type 7, R=1); `nat` is
    normally a NatTraversal LCAF."""
    nonce: int
    eid_prefix: Address
    eid_mask_len: int
    nat: Address
    key_id: int = 0
    alg_id: int = ALG_NONE
    auth_data: bytes = b""
    ttl: int = 0
    eid_reserved: int = 0
    reserved: int = 0
    trailer: bytes = b""
    TYPE = INFO

    def encode(self) -> bytes:
        return _encode_info(self, True, self.nat)


def _decode_info(buf: bytes):
    w, nonce, key_id, alg_id, auth, _, _, _, off = _decode_authed(buf, "Info", None)
    end = len(buf)
    if off + 6 > end:
        raise MalformedMessage("truncated Info TTL/EID", off)
    ttl, ersvd, mask_len = _TTL_EID.unpack_from(buf, off)
    eid, off = _decode(buf, off + 6, end, 0)
    if w & _INFO_R:
        nat, off = _decode(buf, off, end, 0)
        return InfoReply(nonce, eid, mask_len, nat, key_id, alg_id, auth, ttl, ersvd,
                         w & INFO_RESERVED_MASK, buf[off:])
    last = None
    if off < end:
        last, off = _decode(buf, off, end, 0)
    return InfoRequest(nonce, eid, mask_len, key_id, alg_id, auth, ttl, last, ersvd,
                       w & INFO_RESERVED_MASK, buf[off:])


# ---------------------------------------------------------------- Shared Extension

@dataclass(frozen=True, slots=True)
class SharedExtension(_Message):
    """RFC 9304 type 15, kept opaque: 12-bit sub-type and the bytes after it."""
    sub_type: int
    data: bytes = b""
    TYPE = SHARED_EXTENSION

    def encode(self) -> bytes:
        if not 0 <= self.sub_type < 1 << 12:
            raise ValueError("sub-type is a 12-bit value")
        return _U16.pack((SHARED_EXTENSION << 12) | self.sub_type) + bytes(self.data)


def _decode_shared(buf: bytes) -> SharedExtension:
    if len(buf) < 2:
        raise MalformedMessage("truncated Shared Extension header", 0)
    return SharedExtension(_U16.unpack_from(buf, 0)[0] & 0xFFF, buf[2:])


PLAIN_DECODERS = {
    MAP_REQUEST: _decode_map_request,
    MAP_REPLY: _decode_map_reply,
    MAP_REGISTER: _decode_map_register,
    MAP_NOTIFY: _decode_map_notify,
    MAP_NOTIFY_ACK: lambda b: _decode_map_notify(b, MapNotifyAck),
    MAP_REFERRAL: _decode_map_referral,
    INFO: _decode_info,
    SHARED_EXTENSION: _decode_shared,
}
