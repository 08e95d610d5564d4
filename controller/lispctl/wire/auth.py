"""Authentication data of Map-Register, Map-Notify, Map-Notify-Ack and
Info-Request/Reply (RFC 9301 section 5.6; PROTOCOL-NOTES interop facts).

The MAC is an HMAC over the whole message with the auth data zeroed, sent
in FULL: 20 bytes for algorithm 1 (HMAC-SHA-1), 32 bytes for algorithms 2
and 3 (HMAC-SHA-256). verify() works on raw bytes: the auth field sits at a
fixed offset (16) in every authenticated message type, so no decode is needed.

Algorithm 3 (HMAC-SHA-256-128+HKDF-SHA256, RFC 9301 5.6 steps 1-5) keys the
HMAC with a per-message key: per-msg-key = HKDF-SHA256(IKM = nonce (8 bytes,
as in the message) + PSK, salt = s, no info, 32 bytes), where s is
"Map-Register Authentication", "Map-Notify Authentication" or
"Map-Notify-Ack Authentication" after the message's type. RFC 9301 names no
string for Info-Request/Reply, so algorithm 3 is refused there.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import hmac as _py_hmac
import struct
from typing import TypeVar, Union

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as _hmac

from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .control import (ALG_HMAC_SHA1, ALG_HMAC_SHA256, ALG_HMAC_SHA256_HKDF, ALG_NONE, AUTH_DATA_LENGTHS, INFO,
                      MAP_NOTIFY, MAP_NOTIFY_ACK, MAP_REGISTER, InfoReply, InfoRequest, MapNotify, MapNotifyAck,
                      MapRegister)
from .codec import decode_control
from .errors import MalformedMessage

__all__ = ["ALG_NONE", "ALG_HMAC_SHA1", "ALG_HMAC_SHA256", "ALG_HMAC_SHA256_HKDF", "AUTH_DATA_LENGTHS",
           "AUTH_OFFSET",
           "compute_mac", "sign", "signed", "verify", "auth_fields", "map_notify_for", "map_notify_from",
           "verify_register", "add_ms_rtr_auth", "strip_ms_rtr_auth"]

AUTH_TYPES = frozenset((MAP_REGISTER, MAP_NOTIFY, MAP_NOTIFY_ACK, INFO))
AUTH_OFFSET = 16            # the auth data starts here in every AUTH_TYPES message
_KEY_ALG_LEN = struct.Struct("!BBH")

# The message types that carry authentication data.
Authenticated = Union[MapRegister, MapNotify, MapNotifyAck, InfoRequest, InfoReply]
_A = TypeVar("_A", MapRegister, MapNotify, MapNotifyAck, InfoRequest, InfoReply)

_HASHES = {ALG_HMAC_SHA1: hashes.SHA1, ALG_HMAC_SHA256: hashes.SHA256}
# RFC 9301 5.6 step 4: the HKDF salt per message type (algorithm 3)
_HKDF_SALTS = {MAP_REGISTER: b"Map-Register Authentication", MAP_NOTIFY: b"Map-Notify Authentication",
               MAP_NOTIFY_ACK: b"Map-Notify-Ack Authentication"}


def _key(key: str | bytes) -> bytes:
    if type(key) is bytes:
        return key
    return key.encode("utf-8") if isinstance(key, str) else bytes(key)


@functools.lru_cache(maxsize=1024)
def _keyed(alg_id: int, key: bytes) -> _hmac.HMAC:
    # Keying an HMAC costs more than hashing a whole Map-Register; a Map-Server
    # sees the same few site keys over and over, so key once and copy().
    return _hmac.HMAC(key, _HASHES[alg_id]())


# (alg_id, key as given) -> keyed HMAC: skips encoding the key and the
# lru_cache wrapper on the per-message path; bounded like _keyed.
_KEYED_BY_ARG: dict[tuple[int, str | bytes], _hmac.HMAC] = {}
_ZEROS = {n: bytes(n) for n in AUTH_DATA_LENGTHS.values()}


def _new_mac(alg_id: int, key: str | bytes) -> _hmac.HMAC:
    try:
        keyed = _KEYED_BY_ARG.get((alg_id, key))
    except TypeError:                   # an unhashable key (bytearray)
        keyed = None
    if keyed is None:
        keyed = _keyed(alg_id, _key(key))
        if type(key) in (str, bytes) and len(_KEYED_BY_ARG) < _KEYED_MAX:
            _KEYED_BY_ARG[(alg_id, key)] = keyed
    return keyed.copy()


_KEYED_MAX = 1024
_DIGESTS = {ALG_HMAC_SHA1: "sha1", ALG_HMAC_SHA256: "sha256"}


def _digest_name(alg_id: int, key: str | bytes) -> str | None:
    """The hashlib name to MAC with hmac_digest (two hashlib calls) when
    no keyed HMAC is cached for key: with more keys than _KEYED_MAX (a
    Map-Server for thousands of sites) keying a new HMAC object per message
    costs twice as much. None: use the cached keyed HMAC (or algorithm 3)."""
    try:
        if (alg_id, key) in _KEYED_BY_ARG or len(_KEYED_BY_ARG) < _KEYED_MAX:
            return None
    except TypeError:                   # an unhashable key (bytearray)
        return None
    return _DIGESTS.get(alg_id)


# HMAC-SHA-1/SHA-256 (RFC 2104) as two hashlib calls: Python 3.11's
# hmac.digest goes through OpenSSL 3's one-shot HMAC, which looks the
# implementation up again on every call (about 1.5 us for a Map-Register,
# against 0.7-0.9 us this way). A Map-Server computes two per Map-Register.
_HASHLIB = {"sha1": hashlib.sha1, "sha256": hashlib.sha256}
_BLOCK = 64                 # the block size of both
_IPAD = bytes(b ^ 0x36 for b in range(256))
_OPAD = bytes(b ^ 0x5C for b in range(256))


def hmac_pads(key: bytes, digest: str) -> tuple[bytes, bytes]:
    """(key XOR ipad, key XOR opad) of HMAC with hashlib's `digest` (sha1 or
    sha256): what hmac_with takes, for several MACs under one key."""
    if len(key) > _BLOCK:
        key = _HASHLIB[digest](key).digest()
    k = key.ljust(_BLOCK, b"\0")
    return k.translate(_IPAD), k.translate(_OPAD)


def hmac_with(digest: str, pads: tuple[bytes, bytes], msg: bytes) -> bytes:
    """hmac.digest(key, msg, digest), pads = hmac_pads(key, digest)."""
    h = _HASHLIB[digest]
    return h(pads[1] + h(pads[0] + msg).digest()).digest()


def hmac_digest(key: bytes, msg: bytes, digest: str) -> bytes:
    """hmac.digest(key, msg, digest) for sha1 and sha256, faster."""
    return hmac_with(digest, hmac_pads(key, digest), msg)


def per_message_key(key: str | bytes, head: bytes) -> bytes | None:
    """Algorithm 3's key for the message starting with head (at least its
    type and nonce, 12 bytes); None for a type RFC 9301 gives no salt."""
    salt = _HKDF_SALTS.get(head[0] >> 4) if head else None
    if salt is None or len(head) < 12:
        return None
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=b"").derive(bytes(head[4:12]) + _key(key))


def _mac_for(alg_id: int, key: str | bytes, head: bytes) -> _hmac.HMAC | None:
    """A keyed HMAC for alg_id (1, 2 or 3) and the message starting with head."""
    if alg_id == ALG_HMAC_SHA256_HKDF:
        k = per_message_key(key, head)
        return None if k is None else _hmac.HMAC(k, hashes.SHA256())
    if alg_id not in _HASHES:
        return None
    return _new_mac(alg_id, key)


def compute_mac(alg_id: int, key: str | bytes, data: bytes) -> bytes:
    """HMAC of data (a whole message, auth data zeroed) for algorithm 1, 2 or 3 (full length)."""
    m = _mac_for(alg_id, key, data[:12])
    if m is None:
        raise ValueError(f"no MAC for algorithm {alg_id} on this message type")
    m.update(data)
    return m.finalize()


def signed(msg: _A, key: str | bytes) -> _A:
    """A copy of msg (Map-Register/Notify/Notify-Ack/Info) whose auth_data is
    the MAC computed with key for msg.alg_id (empty for algorithm 0)."""
    want = AUTH_DATA_LENGTHS.get(msg.alg_id)
    if want is None:
        raise ValueError(f"unknown algorithm {msg.alg_id}")
    zeroed = dataclasses.replace(msg, auth_data=bytes(want))
    if want == 0:
        return zeroed
    return dataclasses.replace(msg, auth_data=compute_mac(msg.alg_id, key, zeroed.encode()))


def sign(msg: Authenticated, key: str | bytes) -> bytes:
    """Wire bytes of msg with its MAC filled in (see signed())."""
    want = AUTH_DATA_LENGTHS.get(msg.alg_id)
    if want is None:
        raise ValueError(f"unknown algorithm {msg.alg_id}")
    raw = dataclasses.replace(msg, auth_data=bytes(want)).encode()
    if want == 0:
        return raw
    mac = compute_mac(msg.alg_id, key, raw)
    return raw[:AUTH_OFFSET] + mac + raw[AUTH_OFFSET + want:]


_WORD = struct.Struct("!I")
_NOTIFY_I = 0x08000000      # Map-Notify I bit (xTR-ID/site-ID follow the records)


def map_notify_for(raw: bytes, register: MapRegister, key: str | bytes) -> bytes:
    """The signed Map-Notify answering a Map-Register: the same bytes as
    sign(MapNotify(register.nonce, register.records, key_id=register.key_id,
    alg_id=register.alg_id, xtr_id=register.xtr_id, site_id=register.site_id), key),
    where register = decode_control(raw). Built from raw's own bytes (records
    and xTR-ID/site-ID as received, which is what re-encoding the decoded
    records gives) instead of encoding the message again: a Map-Server sends
    one for every Map-Register with the M bit."""
    alen = len(register.auth_data)
    has_xtr = register.xtr_id is not None
    rec_start = AUTH_OFFSET + alen
    tail_end = len(raw) - len(register.trailer)            # records, then xTR-ID/site-ID
    rec_end = tail_end - 24 if has_xtr else tail_end
    if (register.TYPE != MAP_REGISTER or alen != AUTH_DATA_LENGTHS.get(register.alg_id, -1)
            or rec_end < rec_start or len(register.records) > 255):
        raise ValueError("raw is not the encoding of register")
    return map_notify_from(raw, register.alg_id, alen, key, len(register.records), has_xtr,
                           tail_end - len(raw) if register.trailer else None)


def map_notify_from(raw: bytes, alg_id: int, alen: int, key: str | bytes, count: int, has_xtr: bool,
                    body_end: int | None) -> bytes:
    """map_notify_for() from what the Map-Server already knows of raw (a
    Map-Register that decoded to `count` records, with an xTR-ID or not, whose
    records and xTR-ID/site-ID end at raw[body_end] (None: at the end)), alen
    being its algorithm's full MAC length."""
    word = (MAP_NOTIFY << 28) | (_NOTIFY_I if has_xtr else 0) | count
    body = raw[AUTH_OFFSET + alen:body_end]
    head = _WORD.pack(word) + raw[4:AUTH_OFFSET]             # nonce, key ID, alg ID, auth length
    if alen == 0:
        return head + body
    if type(key) is bytes:
        digest = _DIGESTS.get(alg_id)
    else:
        digest = _digest_name(alg_id, key)
        key = _key(key)
    if digest is not None:
        return head + hmac_digest(key, head + _ZEROS[alen] + body, digest) + body
    m = _mac_for(alg_id, key, head)
    if m is None:
        raise ValueError(f"no MAC for algorithm {alg_id}")
    m.update(head)
    m.update(_ZEROS[alen])
    m.update(body)
    return head + m.finalize() + body


def auth_fields(raw: bytes) -> tuple[int, int, bytes] | None:
    """(key_id, alg_id, auth_data) of an authenticated message's raw bytes,
    or None when raw is not one of those types or is too short."""
    if len(raw) < AUTH_OFFSET or raw[0] >> 4 not in AUTH_TYPES:
        return None
    key_id, alg_id, alen = _KEY_ALG_LEN.unpack_from(raw, 12)
    if AUTH_OFFSET + alen > len(raw):
        return None
    return key_id, alg_id, bytes(raw[AUTH_OFFSET:AUTH_OFFSET + alen])


def verify(raw: bytes, key: str | bytes, *,
           alg_ids: tuple[int, ...] = (ALG_HMAC_SHA1, ALG_HMAC_SHA256, ALG_HMAC_SHA256_HKDF)) -> bool:
    """True iff raw (a received Map-Register/Notify/Notify-Ack/Info) carries a
    correct full-length MAC for key under one of alg_ids. Algorithm 0,
    truncated or over-long MACs, and unknown types give False. Constant-time."""
    if len(raw) < AUTH_OFFSET or raw[0] >> 4 not in AUTH_TYPES:
        return False
    _, alg_id, alen = _KEY_ALG_LEN.unpack_from(raw, 12)
    if alg_id not in alg_ids or alen != AUTH_DATA_LENGTHS.get(alg_id, -1) or alen == 0:
        return False
    end = AUTH_OFFSET + alen
    if end > len(raw):
        return False
    if type(raw) is not bytes:
        raw = bytes(raw)
    digest = _digest_name(alg_id, key)
    if digest is not None:
        return _py_hmac.compare_digest(
            hmac_digest(_key(key), raw[:AUTH_OFFSET] + _ZEROS[alen] + raw[end:], digest), raw[AUTH_OFFSET:end])
    m = _mac_for(alg_id, key, raw[:12])
    if m is None:
        return False
    m.update(raw[:AUTH_OFFSET])
    m.update(_ZEROS[alen])
    m.update(raw[end:])
    try:
        m.verify(raw[AUTH_OFFSET:end])
    except InvalidSignature:
        return False
    return True


def verify_register(raw: bytes, alg_id: int, alen: int, key: bytes) -> bool:
    """verify(raw, key, alg_ids=(1, 2, 3)) for a caller that already checked
    that raw is a Map-Register whose auth length alen is alg_id's full MAC
    length (a Map-Server's per-message path: one hashlib call for algorithms
    1 and 2, whatever the number of keys; no keyed HMAC is kept per key)."""
    digest = _DIGESTS.get(alg_id)
    if digest is None:
        return verify(raw, key, alg_ids=(ALG_HMAC_SHA256_HKDF,))
    end = AUTH_OFFSET + alen
    return _py_hmac.compare_digest(
        hmac_digest(key, raw[:AUTH_OFFSET] + _ZEROS[alen] + raw[end:], digest), raw[AUTH_OFFSET:end])


# Kept for callers that already hold two MACs (e.g. comparing a stored one).
compare_digest = _py_hmac.compare_digest


# ---------------------------------------------------------------- MS-RTR authentication
#
# A Map-Server answering a Map-Register that an RTR forwarded for an xTR
# behind a NAT sends the Map-Notify to the RTR, which relays it to the xTR
# and, on its strength, binds the xTR-ID and EIDs to the NAT address it saw.
# So the RTR must know the notify comes from the Map-Server: the Map-Server
# sets the R bit and appends the MS-RTR authentication (draft-ietf-lisp-
# nat-traversal; the layout Wireshark decodes as lisp.msrtr.*): MS-RTR Key ID
# (16 bits), MS-RTR Authentication Data Length (16 bits), MS-RTR
# Authentication Data: the HMAC, with the key the Map-Server shares with
# that RTR, of the whole Map-Notify as sent with this MAC zeroed. The 16-bit
# Key ID is read as RFC 9301 splits the Map-Register's: key ID (high byte,
# 0: one key per Map-Server/RTR pair) and algorithm ID (low byte, 1 or 2) -
# which is also what OpenOverlayRouter writes there (0x0001, HMAC-SHA-1).
# The site MAC inside covers the notify without R and without these fields:
# the RTR strips them and the xTR verifies what it would have got directly.

_NOTIFY_R = 0x04000000
_MS_RTR_HDR = struct.Struct("!HH")
_MS_RTR_ALGS = (ALG_HMAC_SHA1, ALG_HMAC_SHA256)


def add_ms_rtr_auth(notify: bytes, key: str | bytes, alg_id: int = ALG_HMAC_SHA256) -> bytes:
    """notify (a signed Map-Notify without R and without a trailer) with the
    R bit set and the MS-RTR authentication appended."""
    if alg_id not in _MS_RTR_ALGS or len(notify) < AUTH_OFFSET or notify[0] >> 4 != MAP_NOTIFY:
        raise ValueError("add_ms_rtr_auth needs a Map-Notify and algorithm 1 or 2")
    alen = AUTH_DATA_LENGTHS[alg_id]
    (word,) = _WORD.unpack_from(notify)
    head = _WORD.pack(word | _NOTIFY_R) + notify[4:] + _MS_RTR_HDR.pack(alg_id, alen)
    return head + compute_mac(alg_id, key, head + _ZEROS[alen])


def strip_ms_rtr_auth(raw: bytes, key: str | bytes) -> bytes | None:
    """The Map-Notify the Map-Server signed for the xTR (R bit cleared, MS-RTR
    fields removed) when raw carries a correct MS-RTR MAC for key; else None
    (no R bit, no or a malformed MS-RTR field, wrong key). Constant-time compare."""
    try:
        msg = decode_control(raw)
    except MalformedMessage:
        return None
    if (type(msg) is not MapNotify or not msg.rtr or msg.ms_rtr_key_id is None or msg.trailer
            or msg.ms_rtr_key_id >> 8 != 0):
        return None
    alg_id = msg.ms_rtr_key_id & 0xFF
    alen = len(msg.ms_rtr_auth_data)
    if alg_id not in _MS_RTR_ALGS or alen != AUTH_DATA_LENGTHS[alg_id]:
        return None
    body = bytes(raw[:len(raw) - alen])
    if not _py_hmac.compare_digest(compute_mac(alg_id, key, body + _ZEROS[alen]), bytes(raw[len(raw) - alen:])):
        return None
    inner = body[:len(body) - _MS_RTR_HDR.size]
    (word,) = _WORD.unpack_from(inner)
    return _WORD.pack(word & ~_NOTIFY_R) + inner[4:]
