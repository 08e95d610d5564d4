"""Change-Priority Message (CPM): a hypervisor tells its xTR, after a VM
migrated, the new priority of the xTR's RLOCs for the VM's EID and the
addresses the VM was talking with (seed 004, section 4; docs/cpm.md).

Carried as an RFC 9304 Shared Extension Message (type 15) with sub-type
CPM_SUB_TYPE, so no standard peer can take it for one of its messages; the
layout after the sub-type is ours (docs/wire.md, "Change-Priority Message"):

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |Type=15|   Sub-type=4095       |  Version=1    |   Reserved    |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |            Key ID             |     Authentication Data Length|
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |    Alg ID     |   Priority    |   Reserved    | EID Mask-Len  |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |     Correspondent Count       |           Reserved            |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |             Timestamp (milliseconds since 1970, 64 bits)      |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                           Nonce (64 bits)                     |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |            EID-Prefix-AFI     |  EID-Prefix ...               |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |   Correspondent-AFI           |  Correspondent ...  (x count) |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |       Authentication Data (HMAC of every byte before it)      |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

The MAC covers the whole message up to the authentication data (its
length included), so no field can change without the key. The timestamp
and nonce are the replay guard the receiver checks (roles/cpm.py).
"""
from __future__ import annotations

import hmac as _py_hmac
import struct
from dataclasses import dataclass, replace

from .addresses import Address, decode_address, encode_address
from .auth import compute_mac
from .control import AUTH_DATA_LENGTHS, SHARED_EXTENSION
from .errors import MalformedMessage

CPM_SUB_TYPE = 4095
CPM_VERSION = 1
_HEAD = struct.Struct("!HBBHHBBBBHHQQ")
HEADER_LEN = _HEAD.size            # 32
_FIRST = (SHARED_EXTENSION << 12) | CPM_SUB_TYPE


@dataclass(frozen=True, slots=True)
class ChangePriority:
    """One CPM. eid/mask_len as in EID records (an Instance-ID LCAF for a
    non-zero instance); correspondents are AFI-encoded addresses."""
    eid: Address
    mask_len: int
    priority: int
    timestamp_ms: int
    nonce: int
    correspondents: tuple[Address, ...] = ()
    key_id: int = 0
    alg_id: int = 2
    auth_data: bytes = b""

    def signed_part(self) -> bytes:
        """Every byte the MAC covers (the message without its auth data)."""
        if not 0 <= self.priority <= 255 or not 0 <= self.mask_len <= 255:
            raise ValueError("priority and mask length are 8-bit values")
        if not 0 <= self.key_id <= 0xFFFF or not 0 <= self.alg_id <= 255:
            raise ValueError("key ID is 16 bits, algorithm ID 8 bits")
        if len(self.correspondents) > 0xFFFF or len(self.auth_data) > 0xFFFF:
            raise ValueError("too many correspondents or auth data too long")
        if not 0 <= self.timestamp_ms < 1 << 64 or not 0 <= self.nonce < 1 << 64:
            raise ValueError("timestamp and nonce are 64-bit values")
        head = _HEAD.pack(_FIRST, CPM_VERSION, 0, self.key_id, len(self.auth_data), self.alg_id,
                          self.priority, 0, self.mask_len, len(self.correspondents), 0,
                          self.timestamp_ms, self.nonce)
        return head + encode_address(self.eid) + b"".join(encode_address(a) for a in self.correspondents)

    def encode(self) -> bytes:
        return self.signed_part() + bytes(self.auth_data)


def is_cpm(buf: bytes) -> bool:
    """A Shared Extension Message of our sub-type (any version)."""
    return len(buf) >= 2 and (buf[0] << 8 | buf[1]) == _FIRST


def decode_cpm(buf: bytes) -> ChangePriority:
    """Decode a CPM; raises only MalformedMessage. Reserved fields are
    ignored (encoded as zero). Nothing may follow the auth data."""
    if type(buf) is not bytes:
        buf = bytes(buf)
    if len(buf) < HEADER_LEN:
        raise MalformedMessage("truncated Change-Priority Message header", 0)
    (first, version, _r1, key_id, alen, alg_id, priority, _r2, mask_len, count, _r3,
     ts, nonce) = _HEAD.unpack_from(buf, 0)
    if first != _FIRST:
        raise MalformedMessage("not a Change-Priority Message (type 15, sub-type 4095)", 0)
    if version != CPM_VERSION:
        raise MalformedMessage(f"unknown Change-Priority Message version {version}", 2)
    want = AUTH_DATA_LENGTHS.get(alg_id)
    if want is None:
        raise MalformedMessage(f"unknown algorithm ID {alg_id}", 8)
    if alen != want:
        raise MalformedMessage(f"auth data length {alen} does not match algorithm {alg_id}", 6)
    end = len(buf) - alen
    if end < HEADER_LEN:
        raise MalformedMessage("auth data longer than the message", 6)
    eid, off = decode_address(buf, HEADER_LEN, end)
    corr = []
    for _ in range(count):
        if off >= end:
            raise MalformedMessage("truncated correspondent list", off)
        a, off = decode_address(buf, off, end)
        corr.append(a)
    if off != end:
        raise MalformedMessage("bytes between the last correspondent and the auth data", off)
    return ChangePriority(eid, mask_len, priority, ts, nonce, tuple(corr), key_id, alg_id, buf[end:])


def sign_cpm(msg: ChangePriority, key: str | bytes) -> bytes:
    """Wire bytes of msg with the HMAC (msg.alg_id: 1 SHA-1, 2 SHA-256) appended."""
    want = AUTH_DATA_LENGTHS.get(msg.alg_id)
    if not want:
        raise ValueError(f"no MAC for algorithm {msg.alg_id}")
    head = replace(msg, auth_data=bytes(want)).signed_part()
    return head + compute_mac(msg.alg_id, key, head)


def verify_cpm(raw: bytes, msg: ChangePriority, key: str | bytes) -> bool:
    """True when raw (whose decode is msg) carries a valid MAC for key.
    Algorithm 0 (no MAC) is never valid. Constant-time comparison."""
    if not msg.auth_data or msg.alg_id not in (1, 2):
        return False
    body = bytes(raw[:len(raw) - len(msg.auth_data)])
    return _py_hmac.compare_digest(compute_mac(msg.alg_id, key, body), msg.auth_data)

