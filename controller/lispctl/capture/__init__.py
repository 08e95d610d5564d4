"""pcap/pcapng reading and writing for LISP traffic (no scapy, no tshark).

    for item in lisp_datagrams("trace.pcapng"):
        if isinstance(item, Datagram): ...       # UDP 4341/4342, either direction
        else: ...                                 # FrameError: frame number + reason

`lisp_datagrams` never raises for damaged content: bad frames and a truncated
file become FrameError items. It raises CaptureFormatError only when the file
cannot be opened or is not a capture at all.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator, Union

from .files import CaptureFormatError, Record, RecordError, open_bytes, records
from .layers import LayerError, Udp, udp_of
from .writer import PcapngWriter, PcapWriter, frame, ip_udp

LISP_DATA_PORT = 4341
LISP_CONTROL_PORT = 4342

__all__ = ["CaptureFormatError", "Datagram", "FrameError", "lisp_datagrams", "udp_datagrams",
           "PcapWriter", "PcapngWriter", "frame", "ip_udp", "LISP_DATA_PORT", "LISP_CONTROL_PORT"]


@dataclass(frozen=True, slots=True)
class Datagram:
    frame: int
    ts_ns: int
    src: str
    dst: str
    sport: int
    dport: int
    payload: bytes
    truncated: int = 0        # payload bytes a short snaplen cut off (the payload is incomplete)

    @property
    def time(self) -> float:
        return self.ts_ns / 1e9

    @property
    def kind(self) -> str | None:
        """'control' (4342), 'data' (4341) or None. The destination port
        decides first: Map-Replies and probe answers go from 4342 to
        ephemeral ports, data packets from a flow-hash port to 4341."""
        for port in (self.dport, self.sport):
            if port == LISP_CONTROL_PORT:
                return "control"
            if port == LISP_DATA_PORT:
                return "data"
        return None


@dataclass(frozen=True, slots=True)
class FrameError:
    frame: int
    reason: str
    ts_ns: int | None = None


def udp_datagrams(path: str | os.PathLike[str]) -> Iterator[Datagram | FrameError]:
    """Every UDP datagram of a capture, plus an error per frame that could
    not be followed and a final error when the file breaks off."""
    buf = open_bytes(path)
    it = records(buf)           # raises CaptureFormatError before any record
    for rec in it:
        if isinstance(rec, RecordError):
            yield FrameError(rec.frame, rec.reason)
            continue
        try:
            udp = udp_of(rec.linktype, rec.data, snapped=rec.orig_len > len(rec.data))
        except LayerError as e:
            yield FrameError(rec.frame, str(e), rec.ts_ns)
            continue
        if udp is not None:
            yield Datagram(rec.frame, rec.ts_ns, udp.src, udp.dst, udp.sport, udp.dport, udp.payload,
                           udp.truncated)


def lisp_datagrams(path: str | os.PathLike[str]) -> Iterator[Datagram | FrameError]:
    """UDP datagrams to or from port 4341/4342, and all frame errors (a
    frame that cannot be followed might have been LISP)."""
    for item in udp_datagrams(path):
        if isinstance(item, FrameError) or item.kind is not None:
            yield item


Item = Union[Datagram, FrameError]
