"""Packet records out of pcap and pcapng files, without scapy or libpcap.

Formats: classic pcap (both byte orders, microsecond and nanosecond magic) and
pcapng (SHB, IDB, EPB, SPB and the obsolete PB; both byte orders, several
sections and interfaces with their own link types and timestamp resolutions).

A damaged file never raises out of `records()`: the first record that cannot
be framed becomes a `RecordError` and iteration stops (record boundaries are
lost at that point, so nothing after it can be trusted). Only a file that is
not a capture at all raises `CaptureFormatError`, before any record.
"""
from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from typing import Iterator, Union

PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D
PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_BOM = 0x1A2B3C4D
PCAPNG_IDB, PCAPNG_PB, PCAPNG_SPB, PCAPNG_EPB = 1, 2, 3, 6

# Larger records than this are corruption, not packets (libpcap's own limit
# for ordinary link types is 256 KiB).
MAX_RECORD = 1 << 20


class CaptureFormatError(ValueError):
    """The file is not a pcap/pcapng capture, or cannot be read at all."""


@dataclass(frozen=True, slots=True)
class Record:
    frame: int          # 1-based, counted like Wireshark's frame.number
    ts_ns: int          # nanoseconds since the epoch
    linktype: int
    data: bytes
    orig_len: int


@dataclass(frozen=True, slots=True)
class RecordError:
    """The file breaks off or is corrupt at `frame`; no records follow."""
    frame: int
    reason: str


RecordResult = Union[Record, RecordError]


def open_bytes(path: str | os.PathLike[str]) -> bytes | mmap.mmap:
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                return b""
            try:
                return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            except (OSError, ValueError):
                return f.read()
    except OSError as e:
        raise CaptureFormatError(f"cannot read {os.fspath(path)}: {e.strerror or e}") from e


def records(buf: bytes | mmap.mmap | memoryview) -> Iterator[RecordResult]:
    """Every packet record of a pcap or pcapng image, in file order."""
    if len(buf) < 4:
        raise CaptureFormatError(f"not a capture file: {len(buf)} bytes is too short for a header")
    head = bytes(buf[:4])
    if struct.unpack("<I", head)[0] == PCAPNG_SHB:
        return _pcapng(buf)
    for order in "<>":
        magic = struct.unpack(order + "I", head)[0]
        if magic in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
            return _pcap(buf, order, magic == PCAP_MAGIC_NS)
    raise CaptureFormatError(f"not a pcap or pcapng file (magic {head.hex()})")


def _pcap(buf, order: str, nano: bool) -> Iterator[RecordResult]:
    if len(buf) < 24:
        raise CaptureFormatError(f"truncated pcap file header: {len(buf)} of 24 bytes")
    _, vmaj, _vmin, _zone, _sigfigs, _snaplen, network = struct.unpack(order + "IHHiIII", buf[:24])
    if vmaj != 2:
        raise CaptureFormatError(f"unsupported pcap version {vmaj}")
    # The top bits of the link-type word carry FCS information (pcap spec).
    linktype = network & 0x03FFFFFF
    rec_hdr = struct.Struct(order + "IIII")
    scale = 1 if nano else 1000
    pos, frame, end = 24, 0, len(buf)
    while pos < end:
        frame += 1
        if end - pos < 16:
            yield RecordError(frame, f"truncated file: record header at offset {pos} "
                                     f"needs 16 bytes, {end - pos} left")
            return
        sec, frac, incl, orig = rec_hdr.unpack_from(buf, pos)
        if incl > MAX_RECORD:
            yield RecordError(frame, f"corrupt record header at offset {pos}: "
                                     f"captured length {incl} is implausible")
            return
        if end - pos - 16 < incl:
            yield RecordError(frame, f"truncated file: record at offset {pos} needs {incl} "
                                     f"bytes of data, {end - pos - 16} left")
            return
        yield Record(frame, sec * 1_000_000_000 + frac * scale, linktype,
                     bytes(buf[pos + 16:pos + 16 + incl]), orig)
        pos += 16 + incl


@dataclass(slots=True)
class _Iface:
    linktype: int
    snaplen: int
    # timestamp units per second and offset in seconds (if_tsresol, if_tsoffset)
    units: int = 1_000_000
    offset: int = 0

    def ts_ns(self, high: int, low: int) -> int:
        ticks = (high << 32) | low
        if self.units == 1_000_000_000:
            ns = ticks
        else:
            ns = ticks * 1_000_000_000 // self.units
        return ns + self.offset * 1_000_000_000


def _options(body, order: str) -> Iterator[tuple[int, bytes]]:
    pos = 0
    while pos + 4 <= len(body):
        code, length = struct.unpack_from(order + "HH", body, pos)
        if code == 0:
            return
        yield code, bytes(body[pos + 4:pos + 4 + length])
        pos += 4 + ((length + 3) & ~3)


def _idb(body, order: str) -> _Iface:
    linktype, _res, snaplen = struct.unpack_from(order + "HHI", body, 0)
    iface = _Iface(linktype, snaplen)
    for code, value in _options(body[8:], order):
        if code == 9 and len(value) >= 1:           # if_tsresol
            r = value[0]
            iface.units = (1 << (r & 0x7F)) if r & 0x80 else 10 ** r
        elif code == 14 and len(value) >= 8:        # if_tsoffset, seconds
            iface.offset = struct.unpack(order + "q", value[:8])[0]
    return iface


def _pcapng(buf) -> Iterator[RecordResult]:
    end = len(buf)
    pos, frame = 0, 0
    order = "<"
    ifaces: list[_Iface] = []
    while pos < end:
        if end - pos < 12:
            yield RecordError(frame + 1, f"truncated file: block header at offset {pos} "
                                         f"needs 12 bytes, {end - pos} left")
            return
        btype_le = struct.unpack_from("<I", buf, pos)[0]
        if btype_le == PCAPNG_SHB:
            bom = bytes(buf[pos + 8:pos + 12])
            if struct.unpack("<I", bom)[0] == PCAPNG_BOM:
                order = "<"
            elif struct.unpack(">I", bom)[0] == PCAPNG_BOM:
                order = ">"
            else:
                if pos == 0:
                    raise CaptureFormatError("pcapng section header with a bad byte-order magic")
                yield RecordError(frame + 1, f"corrupt section header at offset {pos}")
                return
            ifaces = []
        btype, blen = struct.unpack_from(order + "II", buf, pos)
        if blen < 12 or blen % 4 or blen > MAX_RECORD + 64:
            if pos == 0:
                raise CaptureFormatError(f"pcapng section header with bad length {blen}")
            yield RecordError(frame + 1, f"corrupt block at offset {pos}: length {blen}")
            return
        if end - pos < blen:
            yield RecordError(frame + 1, f"truncated file: block at offset {pos} needs "
                                         f"{blen} bytes, {end - pos} left")
            return
        body = memoryview(buf)[pos + 8:pos + blen - 4]
        trailer = struct.unpack_from(order + "I", buf, pos + blen - 4)[0]
        pos += blen
        if trailer != blen:
            yield RecordError(frame + 1, f"corrupt block at offset {pos - blen}: "
                                         f"trailing length {trailer} != {blen}")
            return
        if btype == PCAPNG_IDB:
            if len(body) < 8:
                yield RecordError(frame + 1, "corrupt interface description block")
                return
            ifaces.append(_idb(body, order))
        elif btype in (PCAPNG_EPB, PCAPNG_PB):
            frame += 1
            if len(body) < 20:
                yield RecordError(frame, f"packet block of {blen} bytes is too short")
                return
            if btype == PCAPNG_EPB:
                ifid, high, low, caplen, orig = struct.unpack_from(order + "IIIII", body, 0)
            else:
                ifid, _drops, high, low, caplen, orig = struct.unpack_from(order + "HHIIII", body, 0)
            if ifid >= len(ifaces):
                yield RecordError(frame, f"packet refers to interface {ifid}, "
                                         f"only {len(ifaces)} described")
                continue
            if caplen > len(body) - 20:
                yield RecordError(frame, f"packet block claims {caplen} captured bytes, "
                                         f"holds {len(body) - 20}")
                continue
            iface = ifaces[ifid]
            yield Record(frame, iface.ts_ns(high, low), iface.linktype,
                         bytes(body[20:20 + caplen]), orig)
        elif btype == PCAPNG_SPB:
            frame += 1
            if not ifaces or len(body) < 4:
                yield RecordError(frame, "simple packet block without interface 0")
                continue
            orig = struct.unpack_from(order + "I", body, 0)[0]
            iface = ifaces[0]
            caplen = min(orig, len(body) - 4, iface.snaplen or orig)
            # SPBs carry no timestamp.
            yield Record(frame, 0, iface.linktype, bytes(body[4:4 + caplen]), orig)
        # other block types (NRB, ISB, DSB, custom) carry no packets
