"""AFI-encoded addresses (RFC 9301 section 5, RFC 8060 LCAF).

An address on the wire is a 16-bit AFI followed by a body whose length the
AFI determines. IPv4/IPv6 become `ipaddress` objects; LCAF (AFI 16387) types
become the frozen dataclasses below; unknown LCAF types are kept opaque and
re-encoded unchanged. An unknown AFI cannot be skipped (its length is
unknown), so it is a MalformedMessage.

Known LCAF types drop their Rsvd1/Flags bytes (and unused bits) on decode;
encode writes them as zero. Everything else round-trips exactly.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Callable, Union

from .errors import MalformedMessage

AFI_NONE = 0
AFI_IPV4 = 1
AFI_IPV6 = 2
AFI_DISTINGUISHED_NAME = 17
AFI_LCAF = 16387
AFI_MAC = 16389

LCAF_AFI_LIST = 1
LCAF_INSTANCE_ID = 2
LCAF_NAT_TRAVERSAL = 7
LCAF_ELP = 10
LCAF_SOURCE_DEST = 12
LCAF_REPLICATION_LIST = 13
LCAF_JSON = 14
LCAF_KEY_VALUE = 15

# Bounds recursion for hostile input (an LCAF inside an LCAF inside ...).
MAX_LCAF_DEPTH = 8


@dataclass(frozen=True, slots=True)
class NoAddress:
    """AFI 0: no address (an unset source EID, a wildcard probe target)."""

    def __repr__(self) -> str:
        return "NO_ADDRESS"


NO_ADDRESS = NoAddress()


@dataclass(frozen=True, slots=True)
class DistinguishedName:
    """AFI 17: a NUL-terminated name (draft-farinacci-lisp-name-encoding)."""
    name: str


@dataclass(frozen=True, slots=True)
class MacAddress:
    """AFI 16389: a 48-bit MAC address (L2 overlays)."""
    octets: bytes

    def __str__(self) -> str:
        return ":".join(f"{b:02x}" for b in self.octets)


@dataclass(frozen=True, slots=True)
class AfiList:
    """LCAF type 1: several addresses of one node (e.g. its IPv4 and IPv6 RLOC)."""
    addresses: tuple["Address", ...]


@dataclass(frozen=True, slots=True)
class InstanceId:
    """LCAF type 2. `iid` is the 32-bit field as sent (LISP uses 24 bits);
    `mask_len` is the IID mask-length carried in Rsvd2."""
    iid: int
    address: "Address"
    mask_len: int = 0


@dataclass(frozen=True, slots=True)
class NatTraversal:
    """LCAF type 7 (draft-ietf-lisp-nat-traversal), carried in Info-Reply."""
    ms_port: int
    etr_port: int
    global_etr_rloc: "Address"
    ms_rloc: "Address"
    private_etr_rloc: "Address"
    rtr_rlocs: tuple["Address", ...] = ()


@dataclass(frozen=True, slots=True)
class ElpHop:
    address: "Address"
    lookup: bool = False   # L
    probe: bool = False    # P
    strict: bool = False   # S


@dataclass(frozen=True, slots=True)
class ExplicitLocatorPath:
    """LCAF type 10: re-encapsulation hops in order."""
    hops: tuple[ElpHop, ...]


@dataclass(frozen=True, slots=True)
class SourceDestKey:
    """LCAF type 12: a (source prefix, destination prefix) lookup key."""
    source: "Address"
    dest: "Address"
    source_mask_len: int = 0
    dest_mask_len: int = 0


@dataclass(frozen=True, slots=True)
class ReplicationEntry:
    address: "Address"
    level: int = 0


@dataclass(frozen=True, slots=True)
class ReplicationList:
    """LCAF type 13: replication list entries for multicast."""
    entries: tuple[ReplicationEntry, ...]


@dataclass(frozen=True, slots=True)
class JsonData:
    """LCAF type 14. `binary` is the B bit; `address` None means the optional
    AFI field was absent altogether (NO_ADDRESS sends AFI 0)."""
    data: bytes
    binary: bool = False
    address: "Address | None" = NO_ADDRESS


@dataclass(frozen=True, slots=True)
class KeyValue:
    """LCAF type 15: a key address and a value address."""
    key: "Address"
    value: "Address"


@dataclass(frozen=True, slots=True)
class UnknownLcaf:
    """Any other LCAF type, kept byte for byte."""
    lcaf_type: int
    body: bytes
    flags: int = 0
    rsvd1: int = 0
    rsvd2: int = 0


Address = Union[
    IPv4Address, IPv6Address, NoAddress, DistinguishedName, MacAddress,
    AfiList, InstanceId, NatTraversal, ExplicitLocatorPath, SourceDestKey,
    ReplicationList, JsonData, KeyValue, UnknownLcaf,
]

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_LCAF_HDR = struct.Struct("!BBBBH")      # rsvd1, flags, type, rsvd2, length
_IID = struct.Struct("!IH")              # iid, inner AFI
_NAT_PORTS = struct.Struct("!HH")
_SD_HDR = struct.Struct("!HBB")
_RLE_HDR = struct.Struct("!HBB")


# ---------------------------------------------------------------- decoding

def decode_address(buf: bytes, offset: int = 0, end: int | None = None) -> tuple[Address, int]:
    """Decode one AFI-encoded address at `offset`; return it and the offset
    just past it. Raises only MalformedMessage."""
    if type(buf) is not bytes:
        buf = bytes(buf)
    if end is None or end > len(buf):
        end = len(buf)
    if offset < 0:
        raise MalformedMessage("negative offset", offset)
    return _decode(buf, offset, end, 0)


def _decode(buf: bytes, off: int, end: int, depth: int) -> tuple[Address, int]:
    if off + 2 > end:
        raise MalformedMessage("truncated address AFI", off)
    afi = (buf[off] << 8) | buf[off + 1]
    off += 2
    if afi == AFI_IPV4:
        e = off + 4
        if e > end:
            raise MalformedMessage("truncated IPv4 address", off)
        return IPv4Address(buf[off:e]), e
    if afi == AFI_IPV6:
        e = off + 16
        if e > end:
            raise MalformedMessage("truncated IPv6 address", off)
        return IPv6Address(buf[off:e]), e
    if afi == AFI_NONE:
        return NO_ADDRESS, off
    if afi == AFI_LCAF:
        return _decode_lcaf(buf, off, end, depth)
    if afi == AFI_DISTINGUISHED_NAME:
        nul = buf.find(b"\x00", off, end)
        if nul < 0:
            raise MalformedMessage("distinguished name without NUL terminator", off)
        try:
            name = buf[off:nul].decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedMessage("distinguished name is not UTF-8", off) from None
        return DistinguishedName(name), nul + 1
    if afi == AFI_MAC:
        e = off + 6
        if e > end:
            raise MalformedMessage("truncated MAC address", off)
        return MacAddress(buf[off:e]), e
    raise MalformedMessage(f"unknown AFI {afi}", off - 2)


def _decode_lcaf(buf: bytes, off: int, end: int, depth: int) -> tuple[Address, int]:
    start = off - 2
    if depth >= MAX_LCAF_DEPTH:
        raise MalformedMessage(f"LCAF nested deeper than {MAX_LCAF_DEPTH}", start)
    if off + 6 > end:
        raise MalformedMessage("truncated LCAF header", start)
    rsvd1, flags, ltype, rsvd2, length = _LCAF_HDR.unpack_from(buf, off)
    body = off + 6
    bend = body + length
    if bend > end:
        raise MalformedMessage(f"LCAF length {length} exceeds the enclosing data", off + 4)
    dec = _LCAF_DECODERS.get(ltype)
    if dec is None:
        return UnknownLcaf(ltype, buf[body:bend], flags, rsvd1, rsvd2), bend
    addr, pos = dec(buf, body, bend, depth + 1, rsvd2)
    if pos != bend:
        raise MalformedMessage(f"LCAF type {ltype} body has {bend - pos} unparsed bytes", pos)
    return addr, bend


def _addresses_until(buf: bytes, off: int, end: int, depth: int) -> tuple[tuple[Address, ...], int]:
    out = []
    while off < end:
        a, off = _decode(buf, off, end, depth)
        out.append(a)
    return tuple(out), off


def _dec_afi_list(buf: bytes, off: int, end: int, depth: int, rsvd2: int) -> tuple[Address, int]:
    addrs, off = _addresses_until(buf, off, end, depth)
    return AfiList(addrs), off


def _dec_iid(buf: bytes, off: int, end: int, depth: int, rsvd2: int) -> tuple[Address, int]:
    if off + 4 > end:
        raise MalformedMessage("truncated instance ID", off)
    iid = _U32.unpack_from(buf, off)[0]
    addr, off = _decode(buf, off + 4, end, depth)
    return InstanceId(iid, addr, rsvd2), off


def _dec_nat(buf: bytes, off: int, end: int, depth: int, rsvd2: int) -> tuple[Address, int]:
    if off + 4 > end:
        raise MalformedMessage("truncated NAT-traversal ports", off)
    ms_port, etr_port = _NAT_PORTS.unpack_from(buf, off)
    g, off = _decode(buf, off + 4, end, depth)
    ms, off = _decode(buf, off, end, depth)
    priv, off = _decode(buf, off, end, depth)
    rtrs, off = _addresses_until(buf, off, end, depth)
    return NatTraversal(ms_port, etr_port, g, ms, priv, rtrs), off


def _dec_elp(buf: bytes, off: int, end: int, depth: int, rsvd2: int) -> tuple[Address, int]:
    hops: list[ElpHop] = []
    while off < end:
        if off + 2 > end:
            raise MalformedMessage("truncated ELP hop flags", off)
        f = (buf[off] << 8) | buf[off + 1]
        a, off = _decode(buf, off + 2, end, depth)
        hops.append(ElpHop(a, bool(f & 4), bool(f & 2), bool(f & 1)))
    return ExplicitLocatorPath(tuple(hops)), off


def _dec_sd(buf: bytes, off: int, end: int, depth: int, rsvd2: int) -> tuple[Address, int]:
    if off + 4 > end:
        raise MalformedMessage("truncated source/dest key header", off)
    _, sml, dml = _SD_HDR.unpack_from(buf, off)
    s, off = _decode(buf, off + 4, end, depth)
    d, off = _decode(buf, off, end, depth)
    return SourceDestKey(s, d, sml, dml), off


def _dec_rle(buf: bytes, off: int, end: int, depth: int, rsvd2: int) -> tuple[Address, int]:
    entries: list[ReplicationEntry] = []
    while off < end:
        if off + 4 > end:
            raise MalformedMessage("truncated replication list entry", off)
        level = buf[off + 3]
        a, off = _decode(buf, off + 4, end, depth)
        entries.append(ReplicationEntry(a, level))
    return ReplicationList(tuple(entries)), off


def _dec_json(buf: bytes, off: int, end: int, depth: int, rsvd2: int) -> tuple[Address, int]:
    if off + 2 > end:
        raise MalformedMessage("truncated JSON length", off)
    n = _U16.unpack_from(buf, off)[0]
    off += 2
    if off + n > end:
        raise MalformedMessage(f"JSON length {n} exceeds the LCAF body", off - 2)
    data = buf[off:off + n]
    off += n
    if off == end:
        return JsonData(data, bool(rsvd2 & 1), None), off
    a, off = _decode(buf, off, end, depth)
    return JsonData(data, bool(rsvd2 & 1), a), off


def _dec_kv(buf: bytes, off: int, end: int, depth: int, rsvd2: int) -> tuple[Address, int]:
    k, off = _decode(buf, off, end, depth)
    v, off = _decode(buf, off, end, depth)
    return KeyValue(k, v), off


_LCAF_DECODERS: dict[int, Callable[[bytes, int, int, int, int], tuple[Address, int]]] = {
    LCAF_AFI_LIST: _dec_afi_list,
    LCAF_INSTANCE_ID: _dec_iid,
    LCAF_NAT_TRAVERSAL: _dec_nat,
    LCAF_ELP: _dec_elp,
    LCAF_SOURCE_DEST: _dec_sd,
    LCAF_REPLICATION_LIST: _dec_rle,
    LCAF_JSON: _dec_json,
    LCAF_KEY_VALUE: _dec_kv,
}


# ---------------------------------------------------------------- encoding

def encode_address(addr: Address) -> bytes:
    """AFI + body. Raises ValueError for values that do not fit the format."""
    enc = _ENCODERS.get(type(addr))
    if enc is None:
        raise ValueError(f"not a wire address: {addr!r}")
    return enc(addr)


def _lcaf(ltype: int, body: bytes, rsvd2: int = 0, flags: int = 0, rsvd1: int = 0) -> bytes:
    if len(body) > 0xFFFF:
        raise ValueError(f"LCAF type {ltype} body of {len(body)} bytes exceeds 65535")
    return b"\x40\x03" + _LCAF_HDR.pack(rsvd1, flags, ltype, rsvd2, len(body)) + body


def _u8(v: int, what: str) -> int:
    if not 0 <= v <= 0xFF:
        raise ValueError(f"{what} {v} is not an 8-bit value")
    return v


def _enc_v4(a: IPv4Address) -> bytes:
    return b"\x00\x01" + a.packed


def _enc_v6(a: IPv6Address) -> bytes:
    return b"\x00\x02" + a.packed


def _enc_none(a: NoAddress) -> bytes:
    return b"\x00\x00"


def _enc_dn(a: DistinguishedName) -> bytes:
    raw = a.name.encode("utf-8")
    if b"\x00" in raw:
        raise ValueError("distinguished name contains NUL")
    return b"\x00\x11" + raw + b"\x00"


def _enc_mac(a: MacAddress) -> bytes:
    if len(a.octets) != 6:
        raise ValueError("MAC address must be 6 bytes")
    return b"\x40\x05" + bytes(a.octets)


def _enc_afi_list(a: AfiList) -> bytes:
    return _lcaf(LCAF_AFI_LIST, b"".join(encode_address(x) for x in a.addresses))


def _enc_iid(a: InstanceId) -> bytes:
    if not 0 <= a.iid <= 0xFFFFFFFF:
        raise ValueError(f"instance ID {a.iid} is not a 32-bit value")
    return _lcaf(LCAF_INSTANCE_ID, _U32.pack(a.iid) + encode_address(a.address),
                 _u8(a.mask_len, "IID mask length"))


def _enc_nat(a: NatTraversal) -> bytes:
    body = [_NAT_PORTS.pack(a.ms_port, a.etr_port), encode_address(a.global_etr_rloc),
            encode_address(a.ms_rloc), encode_address(a.private_etr_rloc)]
    body += [encode_address(r) for r in a.rtr_rlocs]
    return _lcaf(LCAF_NAT_TRAVERSAL, b"".join(body))


def _enc_elp(a: ExplicitLocatorPath) -> bytes:
    parts = []
    for h in a.hops:
        parts.append(_U16.pack((h.lookup << 2) | (h.probe << 1) | int(h.strict)))
        parts.append(encode_address(h.address))
    return _lcaf(LCAF_ELP, b"".join(parts))


def _enc_sd(a: SourceDestKey) -> bytes:
    return _lcaf(LCAF_SOURCE_DEST, _SD_HDR.pack(0, _u8(a.source_mask_len, "source mask length"),
                                                _u8(a.dest_mask_len, "dest mask length"))
                 + encode_address(a.source) + encode_address(a.dest))


def _enc_rle(a: ReplicationList) -> bytes:
    return _lcaf(LCAF_REPLICATION_LIST, b"".join(
        _RLE_HDR.pack(0, 0, _u8(e.level, "RLE level")) + encode_address(e.address)
        for e in a.entries))


def _enc_json(a: JsonData) -> bytes:
    if len(a.data) > 0xFFFF:
        raise ValueError("JSON data exceeds 65535 bytes")
    body = _U16.pack(len(a.data)) + bytes(a.data)
    if a.address is not None:
        body += encode_address(a.address)
    return _lcaf(LCAF_JSON, body, 1 if a.binary else 0)


def _enc_kv(a: KeyValue) -> bytes:
    return _lcaf(LCAF_KEY_VALUE, encode_address(a.key) + encode_address(a.value))


def _enc_unknown(a: UnknownLcaf) -> bytes:
    return _lcaf(_u8(a.lcaf_type, "LCAF type"), bytes(a.body), _u8(a.rsvd2, "LCAF rsvd2"),
                 _u8(a.flags, "LCAF flags"), _u8(a.rsvd1, "LCAF rsvd1"))


_ENCODERS: dict[type, Callable[..., bytes]] = {
    IPv4Address: _enc_v4,
    IPv6Address: _enc_v6,
    NoAddress: _enc_none,
    DistinguishedName: _enc_dn,
    MacAddress: _enc_mac,
    AfiList: _enc_afi_list,
    InstanceId: _enc_iid,
    NatTraversal: _enc_nat,
    ExplicitLocatorPath: _enc_elp,
    SourceDestKey: _enc_sd,
    ReplicationList: _enc_rle,
    JsonData: _enc_json,
    KeyValue: _enc_kv,
    UnknownLcaf: _enc_unknown,
}
