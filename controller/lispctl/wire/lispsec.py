"""LISP-SEC authentication data (RFC 9303) and its cryptography.

Two structures travel on the wire:

- the ECM Authentication Data, right after the 4-byte ECM header when the
  ECM S bit is set (RFC 9301 5.8, RFC 9303 6.1, Figure 1):

      ECM AD Type (8) | Unassigned (8) | Requested HMAC ID (16)
      OTK Length (16) | Key ID (8) | OTK Wrapping ID (8)      \
      One-Time-Key Preamble (64)                               > OTK-AD
      One-Time Key (128)                                      /
      EID-AD: EID-AD Length (16) | KDF ID (16)
              Record Count (8) | E | Unassigned (7) | EID HMAC ID (16)
              Record Count x [Unassigned (8) | EID mask-len (8) | EID-AFI (16) | EID-Prefix]
              EID HMAC

- the Map-Reply Authentication Data, after the last EID record of a Map-Reply
  with the S bit (RFC 9303 6.2, Figure 2): MR AD Type (8) | Unassigned (24),
  the EID-AD as above, then PKT-AD: PKT-AD Length (16) | PKT HMAC ID (16) | PKT HMAC.

Length fields, as we read RFC 9303:
- EID-AD Length counts the whole EID-AD, itself included: the ITR's EID-AD
  (only the KDF ID) has length 4, as the RFC requires.
- PKT-AD Length likewise counts the whole PKT-AD (4 + the HMAC).
- OTK Length is "the length of the OTK-AD, which contains the OTK Preamble
  and the OTK": we send 24 (preamble + 128-bit OTK). The figure draws the
  OTK-AD from the OTK Length word, so we also accept 28; the OTK is 128
  bits either way (the only size RFC 9303 defines).
- HMAC lengths follow from these lengths. We send the truncated outputs the
  algorithm names give (HMAC-SHA-256-128: 16 bytes, HMAC-SHA-1-96: 12) and
  also accept the full outputs (32 / 20): Map-Register peers send full MACs
  (PROTOCOL-NOTES), and a longer MAC is no weaker.

Keys (RFC 9303 6.5, 6.7.1), where the RFC leaves HKDF's inputs open:
- per-msg-key = HKDF(IKM = nonce (8 bytes, big endian) + "OTK-Key-Wrap" + PSK,
  no salt, no info, 16 bytes): the text's KDF(nonce + s + PSK[Key ID]).
- MS-OTK = HKDF(IKM = ITR-OTK, no salt, no info, 16 bytes) with the KDF the
  'KDF ID' names (HKDF-SHA256, or HKDF-SHA1-128).
- OTK wrapping 2 (AES-KEY-WRAP-128+HKDF-SHA256): RFC 3394 with the default IV
  0xA6A6A6A6A6A6A6A6; its 192-bit output is preamble (64) + OTK field (128).
  Unwrapping checks the IV (cryptography raises on mismatch).

Decoders raise only MalformedMessage; crypto checks return False/None.
"""
from __future__ import annotations

import hmac as _py_hmac
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as _hmac
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from .addresses import Address, _decode, encode_address
from .errors import MalformedMessage
from .records import check_mask_len

# IANA "LISP ECM Authentication Data Types" / "LISP Map-Reply Authentication Data Types"
ECM_AD_LISP_SEC = 1
MR_AD_LISP_SEC = 1
# "LISP-SEC Preferred Authentication Data HMAC IDs"
HMAC_NOPREF = 0
HMAC_SHA1_96 = 1
HMAC_SHA256_128 = 2
# "LISP-SEC Authentication Data Key Wrap IDs"
WRAP_NULL_128 = 1
WRAP_AES_128_HKDF_SHA256 = 2
# "LISP-SEC Authentication Data Key Derivation Function IDs"
KDF_NOPREF = 0
KDF_HKDF_SHA1_128 = 1
KDF_HKDF_SHA256 = 2

OTK_LEN = 16
PREAMBLE_LEN = 8
OTK_AD_LENGTHS = (24, 28)          # accepted 'OTK Length' values (see above); 24 sent
_HMAC_HASH = {HMAC_SHA1_96: hashes.SHA1, HMAC_SHA256_128: hashes.SHA256}
HMAC_LENGTHS = {HMAC_SHA1_96: 12, HMAC_SHA256_128: 16}            # sent (truncated)
_HMAC_ACCEPT = {HMAC_SHA1_96: (12, 20), HMAC_SHA256_128: (16, 32)}
_KDF_HASH = {KDF_HKDF_SHA1_128: hashes.SHA1, KDF_HKDF_SHA256: hashes.SHA256}
_WRAP_SALT = b"OTK-Key-Wrap"

_H4 = struct.Struct("!BBH")        # type, unassigned, requested HMAC ID
_OTK_HDR = struct.Struct("!HBB")   # OTK length, key ID, wrap ID
_HH = struct.Struct("!HH")
_EID_HDR = struct.Struct("!BBH")   # record count, E + unassigned, EID HMAC ID
_E_BIT = 0x80


def _u16(v: int, what: str) -> int:
    if not 0 <= v <= 0xFFFF:
        raise ValueError(f"{what} {v} is not a 16-bit value")
    return v


@dataclass(frozen=True, slots=True)
class EidAdPrefix:
    """One EID-Prefix of an EID-AD (an AFI-encoded address and a mask length)."""
    eid: Address
    mask_len: int


@dataclass(frozen=True, slots=True)
class EidAd:
    """EID Authentication Data. With no prefixes, no HMAC, HMAC ID 0 and E
    clear it is the ITR's 4-byte form (EID-AD Length, KDF ID)."""
    kdf_id: int
    hmac_id: int = 0
    prefixes: tuple[EidAdPrefix, ...] = ()
    etr_cant_sign: bool = False        # E
    hmac: bytes = b""
    unassigned: int = 0                # the 7 bits after E, kept in place

    @property
    def short(self) -> bool:
        return not self.prefixes and not self.hmac and not self.hmac_id and not self.etr_cant_sign \
            and not self.unassigned

    def encode(self) -> bytes:
        _u16(self.kdf_id, "KDF ID")
        if self.short:
            return _HH.pack(4, self.kdf_id)
        if len(self.prefixes) > 255:
            raise ValueError("more than 255 EID-AD records")
        if self.unassigned & ~0x7F:
            raise ValueError("EID-AD unassigned bits outside their 7 bits")
        recs = []
        for p in self.prefixes:
            if not 0 <= p.mask_len <= 255:
                raise ValueError(f"mask length {p.mask_len}")
            recs.append(bytes((0, p.mask_len)) + encode_address(p.eid))
        body = (_EID_HDR.pack(len(self.prefixes), (_E_BIT if self.etr_cant_sign else 0) | self.unassigned,
                              _u16(self.hmac_id, "EID HMAC ID")) + b"".join(recs) + bytes(self.hmac))
        total = 4 + len(body)
        return _HH.pack(_u16(total, "EID-AD length"), self.kdf_id) + body


def decode_eid_ad(buf: bytes, off: int, end: int) -> tuple[EidAd, int]:
    """The EID-AD at buf[off:], within end; returns it and the offset after it."""
    if off + 4 > end:
        raise MalformedMessage("truncated EID-AD", off)
    length, kdf_id = _HH.unpack_from(buf, off)
    if length < 4 or off + length > end:
        raise MalformedMessage(f"EID-AD length {length} does not fit", off)
    stop = off + length
    if length == 4:
        return EidAd(kdf_id), stop
    if length < 8:
        raise MalformedMessage(f"EID-AD length {length}: neither 4 nor a full EID-AD", off)
    count, flags, hmac_id = _EID_HDR.unpack_from(buf, off + 4)
    p = off + 8
    prefixes = []
    for _ in range(count):
        if p + 2 > stop:
            raise MalformedMessage("truncated EID-AD record", p)
        mask_len = buf[p + 1]
        addr, p = _decode(buf, p + 2, stop, 0)
        check_mask_len(addr, mask_len, p)
        prefixes.append(EidAdPrefix(addr, mask_len))
    hmac = bytes(buf[p:stop])
    if not hmac:
        raise MalformedMessage("EID-AD without an EID HMAC", p)
    return EidAd(kdf_id, hmac_id, tuple(prefixes), bool(flags & _E_BIT), hmac, flags & 0x7F), stop


@dataclass(frozen=True, slots=True)
class EcmAuthData:
    """The LISP-SEC ECM Authentication Data (RFC 9303 Figure 1)."""
    requested_hmac_id: int
    key_id: int
    wrap_id: int
    preamble: bytes                    # 8 bytes: zero (NULL wrap) or the key wrap's first 64 bits
    otk: bytes                         # 16 bytes: the OTK, wrapped as wrap_id says
    eid_ad: EidAd
    ad_type: int = ECM_AD_LISP_SEC
    unassigned: int = 0
    otk_length: int = 24               # as sent/received (24 or 28, see the module doc)

    def encode(self) -> bytes:
        if len(self.preamble) != PREAMBLE_LEN or len(self.otk) != OTK_LEN:
            raise ValueError("OTK preamble is 8 bytes and the OTK 16")
        if self.otk_length not in OTK_AD_LENGTHS:
            raise ValueError(f"OTK length {self.otk_length}")
        if not 0 <= self.key_id <= 255 or not 0 <= self.wrap_id <= 255:
            raise ValueError("key ID and OTK wrapping ID are 8-bit values")
        return b"".join([_H4.pack(self.ad_type, self.unassigned, _u16(self.requested_hmac_id, "HMAC ID")),
                         _OTK_HDR.pack(self.otk_length, self.key_id, self.wrap_id),
                         bytes(self.preamble), bytes(self.otk), self.eid_ad.encode()])


def decode_ecm_ad(buf: bytes, off: int = 0, end: int | None = None) -> tuple[EcmAuthData, int]:
    """The ECM Authentication Data at buf[off:]; returns it and the offset after it
    (where the inner IP header starts)."""
    end = len(buf) if end is None else end
    if off + 32 > end:
        raise MalformedMessage("truncated LISP-SEC ECM authentication data", off)
    ad_type, unassigned, req_hmac = _H4.unpack_from(buf, off)
    if ad_type != ECM_AD_LISP_SEC:
        raise MalformedMessage(f"ECM AD type {ad_type} is not LISP-SEC", off)
    otk_len, key_id, wrap_id = _OTK_HDR.unpack_from(buf, off + 4)
    if otk_len not in OTK_AD_LENGTHS:
        raise MalformedMessage(f"OTK length {otk_len} (a 128-bit OTK needs 24)", off + 4)
    preamble = bytes(buf[off + 8:off + 16])
    otk = bytes(buf[off + 16:off + 32])
    eid_ad, p = decode_eid_ad(buf, off + 32, end)
    return EcmAuthData(req_hmac, key_id, wrap_id, preamble, otk, eid_ad, ad_type, unassigned, otk_len), p


def ecm_ad_present(buf: bytes, off: int = 4) -> bool:
    """Whether an ECM with the S bit carries authentication data at off: an
    AD type byte (1) where an IP header would start with version 4 or 6."""
    return len(buf) > off and buf[off] == ECM_AD_LISP_SEC


@dataclass(frozen=True, slots=True)
class MapReplyAuthData:
    """The LISP-SEC Map-Reply Authentication Data (RFC 9303 Figure 2)."""
    eid_ad: EidAd
    pkt_hmac_id: int
    pkt_hmac: bytes
    ad_type: int = MR_AD_LISP_SEC
    unassigned: int = 0                # 24 bits

    def encode(self) -> bytes:
        if not 0 <= self.unassigned < 1 << 24:
            raise ValueError("Map-Reply AD unassigned field is 24 bits")
        return b"".join([struct.pack("!I", (self.ad_type << 24) | self.unassigned), self.eid_ad.encode(),
                         _HH.pack(_u16(4 + len(self.pkt_hmac), "PKT-AD length"),
                                  _u16(self.pkt_hmac_id, "PKT HMAC ID")), bytes(self.pkt_hmac)])


def decode_map_reply_ad(buf: bytes) -> MapReplyAuthData:
    """The authentication data of a Map-Reply with the S bit: the bytes after
    its last record (MapReply.trailer). Nothing may follow the PKT HMAC: it
    would not be covered by it."""
    end = len(buf)
    if end < 4:
        raise MalformedMessage("truncated Map-Reply authentication data", 0)
    word = struct.unpack_from("!I", buf, 0)[0]
    if word >> 24 != MR_AD_LISP_SEC:
        raise MalformedMessage(f"Map-Reply AD type {word >> 24} is not LISP-SEC", 0)
    eid_ad, p = decode_eid_ad(buf, 4, end)
    if p + 4 > end:
        raise MalformedMessage("truncated PKT-AD", p)
    plen, hmac_id = _HH.unpack_from(buf, p)
    if plen <= 4 or p + plen != end:
        raise MalformedMessage(f"PKT-AD length {plen} does not end the Map-Reply", p)
    return MapReplyAuthData(eid_ad, hmac_id, bytes(buf[p + 4:end]), word >> 24, word & 0xFFFFFF)


# ---------------------------------------------------------------- crypto

def hmac_supported(hmac_id: int) -> bool:
    return hmac_id in _HMAC_HASH


def kdf_supported(kdf_id: int) -> bool:
    return kdf_id in _KDF_HASH


def compute_hmac(hmac_id: int, key: bytes, data: bytes) -> bytes:
    """The HMAC for hmac_id, truncated as its name says (SHA-256-128: 16 bytes)."""
    if hmac_id not in _HMAC_HASH:
        raise ValueError(f"no HMAC for ID {hmac_id}")
    m = _hmac.HMAC(bytes(key), _HMAC_HASH[hmac_id]())
    m.update(data)
    return m.finalize()[:HMAC_LENGTHS[hmac_id]]


def check_hmac(hmac_id: int, key: bytes, data: bytes, mac: bytes) -> bool:
    """Constant-time check of a truncated or full-length HMAC; unknown IDs
    and any other length are False."""
    if hmac_id not in _HMAC_HASH or len(mac) not in _HMAC_ACCEPT[hmac_id]:
        return False
    m = _hmac.HMAC(bytes(key), _HMAC_HASH[hmac_id]())
    m.update(data)
    return _py_hmac.compare_digest(m.finalize()[:len(mac)], bytes(mac))


def hkdf(kdf_id: int, ikm: bytes, length: int = OTK_LEN, salt: bytes | None = None, info: bytes = b"") -> bytes:
    if kdf_id not in _KDF_HASH:
        raise ValueError(f"no KDF for ID {kdf_id}")
    return HKDF(algorithm=_KDF_HASH[kdf_id](), length=length, salt=salt, info=info).derive(bytes(ikm))


def derive_ms_otk(kdf_id: int, itr_otk: bytes) -> bytes:
    """MS-OTK = KDF(ITR-OTK) (RFC 9303 6.7.1; inputs as in the module doc)."""
    return hkdf(kdf_id, itr_otk)


def _per_msg_key(psk: bytes, nonce: int) -> bytes:
    return hkdf(KDF_HKDF_SHA256, nonce.to_bytes(8, "big") + _WRAP_SALT + bytes(psk))


def wrap_otk(wrap_id: int, psk: bytes, nonce: int, otk: bytes) -> tuple[bytes, bytes]:
    """(preamble, OTK field) carrying otk under wrap_id (RFC 9303 6.5)."""
    if len(otk) != OTK_LEN:
        raise ValueError("the OTK is 128 bits")
    if wrap_id == WRAP_NULL_128:
        return bytes(PREAMBLE_LEN), bytes(otk)
    if wrap_id == WRAP_AES_128_HKDF_SHA256:
        out = aes_key_wrap(_per_msg_key(psk, nonce), bytes(otk))
        return out[:PREAMBLE_LEN], out[PREAMBLE_LEN:]
    raise ValueError(f"no OTK wrapping {wrap_id}")


def unwrap_otk(wrap_id: int, psk: bytes | None, nonce: int, preamble: bytes, field: bytes) -> bytes | None:
    """The clear OTK, or None when the wrapping is unknown, the key is
    missing or the RFC 3394 integrity check (IV 0xA6..A6) fails. NULL
    wrapping needs a zero preamble; refusing it is the caller's policy."""
    if wrap_id == WRAP_NULL_128:
        return bytes(field) if bytes(preamble) == bytes(PREAMBLE_LEN) else None
    if wrap_id != WRAP_AES_128_HKDF_SHA256 or psk is None:
        return None
    try:
        return aes_key_unwrap(_per_msg_key(psk, nonce), bytes(preamble) + bytes(field))
    except (InvalidUnwrap, ValueError):
        return None


def eid_ad_signed(eid_ad: EidAd, hmac_id: int, itr_otk: bytes) -> EidAd:
    """eid_ad with hmac_id and its EID HMAC (keyed with the ITR-OTK, over the
    whole EID-AD with the EID HMAC zeroed)."""
    n = HMAC_LENGTHS[hmac_id]
    zeroed = EidAd(eid_ad.kdf_id, hmac_id, eid_ad.prefixes, eid_ad.etr_cant_sign, bytes(n))
    return EidAd(eid_ad.kdf_id, hmac_id, eid_ad.prefixes, eid_ad.etr_cant_sign,
                 compute_hmac(hmac_id, itr_otk, zeroed.encode()))


def eid_ad_valid(eid_ad: EidAd, itr_otk: bytes) -> bool:
    """The EID HMAC checks out under the ITR-OTK (RFC 9303 6.9, errata 7423:
    the EID HMAC field, not the EID HMAC ID, is zeroed)."""
    if eid_ad.short or not eid_ad.hmac:
        return False
    zeroed = EidAd(eid_ad.kdf_id, eid_ad.hmac_id, eid_ad.prefixes, eid_ad.etr_cant_sign,
                   bytes(len(eid_ad.hmac)), eid_ad.unassigned)
    return check_hmac(eid_ad.hmac_id, itr_otk, zeroed.encode(), eid_ad.hmac)


def sign_map_reply(unsigned: bytes, eid_ad: EidAd, pkt_hmac_id: int, ms_otk: bytes) -> bytes:
    """Wire bytes of a Map-Reply with the S bit and its authentication data.
    unsigned: the encoded Map-Reply without S bit and without trailer. The
    PKT HMAC (keyed with the MS-OTK) covers the whole message, the PKT HMAC
    zeroed (RFC 9303 6.8)."""
    if len(unsigned) < 12 or unsigned[0] >> 4 != 2:
        raise ValueError("not a Map-Reply")
    n = HMAC_LENGTHS[pkt_hmac_id]
    head = bytes([unsigned[0] | 0x02]) + bytes(unsigned[1:])          # S: bit 6 of the first byte
    body = head + MapReplyAuthData(eid_ad, pkt_hmac_id, bytes(n)).encode()
    return body[:-n] + compute_hmac(pkt_hmac_id, ms_otk, body)


def map_reply_pkt_valid(raw: bytes, ad: MapReplyAuthData, ms_otk: bytes) -> bool:
    """The PKT HMAC at the end of raw (a received Map-Reply whose decoded AD is ad)."""
    n = len(ad.pkt_hmac)
    if n == 0 or len(raw) < n or bytes(raw[len(raw) - n:]) != ad.pkt_hmac:
        return False
    return check_hmac(ad.pkt_hmac_id, ms_otk, bytes(raw[:len(raw) - n]) + bytes(n), ad.pkt_hmac)
