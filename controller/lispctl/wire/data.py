"""The LISP data-plane header (RFC 9300 section 5.3), 8 bytes after UDP.

    |N|L|E|V|I|R|K|K|  Nonce / Map-Version (24 bits)        |
    |  Instance ID (24 bits) when I=1       | LSBs (8 bits)  |   (32 LSBs when I=0)

With V (and not N) the 24-bit field holds source and destination
map-versions (12 bits each, RFC 9302). RFC 9300: if N and V are both set the
field is a nonce, so decode does exactly that.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from .errors import MalformedMessage

DATA_HEADER_LEN = 8
_HDR = struct.Struct("!II")


@dataclass(frozen=True, slots=True)
class DataHeader:
    nonce_present: bool = False        # N
    lsb_enabled: bool = False          # L
    echo_nonce: bool = False           # E
    map_version: bool = False          # V
    instance_id_present: bool = False  # I
    key_bits: int = 0                  # the 3 bits after I: reserved (RFC 9300) / KK (RFC 8061)
    nonce: int = 0                     # 24 bits (whenever the field is not map-versions)
    source_map_version: int = 0        # 12 bits, with V and not N
    dest_map_version: int = 0          # 12 bits, with V and not N
    instance_id: int = 0               # 24 bits, with I
    lsb: int = 0                       # 8 bits with I, 32 bits without

    @property
    def versions_present(self) -> bool:
        return self.map_version and not self.nonce_present

    def encode(self) -> bytes:
        if not 0 <= self.key_bits < 8:
            raise ValueError("key_bits is a 3-bit value")
        flags = ((self.nonce_present << 7) | (self.lsb_enabled << 6) | (self.echo_nonce << 5)
                 | (self.map_version << 4) | (self.instance_id_present << 3) | self.key_bits)
        if self.versions_present:
            if self.nonce:
                raise ValueError("nonce set while the field carries map-versions")
            if not (0 <= self.source_map_version < 4096 and 0 <= self.dest_map_version < 4096):
                raise ValueError("map-versions are 12-bit values")
            field = (self.source_map_version << 12) | self.dest_map_version
        else:
            if self.source_map_version or self.dest_map_version:
                raise ValueError("map-versions set but V is clear (or N is set)")
            if not 0 <= self.nonce < 1 << 24:
                raise ValueError("nonce is a 24-bit value")
            field = self.nonce
        if self.instance_id_present:
            if not (0 <= self.instance_id < 1 << 24 and 0 <= self.lsb < 256):
                raise ValueError("instance ID is 24 bits and LSBs 8 bits when I is set")
            second = (self.instance_id << 8) | self.lsb
        else:
            if self.instance_id:
                raise ValueError("instance_id set but I is clear")
            if not 0 <= self.lsb < 1 << 32:
                raise ValueError("LSBs are a 32-bit value")
            second = self.lsb
        return _HDR.pack((flags << 24) | field, second)


def decode_data_header(buf: bytes) -> DataHeader:
    """Decode the first 8 bytes of buf (the rest, the inner packet, is ignored)."""
    if len(buf) < DATA_HEADER_LEN:
        raise MalformedMessage(f"truncated data header ({len(buf)} of 8 bytes)", 0)
    first, second = _HDR.unpack_from(buf, 0)
    f = first >> 24
    field = first & 0xFFFFFF
    n, v, i = bool(f & 0x80), bool(f & 0x10), bool(f & 0x08)
    if v and not n:
        nonce, sv, dv = 0, field >> 12, field & 0xFFF
    else:
        nonce, sv, dv = field, 0, 0
    if i:
        iid, lsb = second >> 8, second & 0xFF
    else:
        iid, lsb = 0, second
    return DataHeader(n, bool(f & 0x40), bool(f & 0x20), v, i, f & 7, nonce, sv, dv, iid, lsb)
