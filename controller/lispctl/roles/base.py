"""The contract between sans-IO roles and the asyncio daemon.

A role never opens a socket or reads the clock. The daemon feeds it datagrams,
data-plane miss events and the time, and carries out the effects it returns,
in order. That keeps every protocol decision unit-testable without a kernel.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol, Union

from lispctl.mapping.types import EidPrefix, IPAddress, MapAction, Rloc

CONTROL_PORT = 4342
DATA_PORT = 4341


@dataclass(frozen=True, slots=True)
class Endpoint:
    addr: IPAddress
    port: int = CONTROL_PORT


@dataclass(frozen=True, slots=True)
class Send:
    """Send payload to dst. src=None: from the control socket of dst's family
    (port 4342). A src with an address asks for that source address (an RLOC)."""
    payload: bytes
    dst: Endpoint
    src: Endpoint | None = None


@dataclass(frozen=True, slots=True)
class InstallMapping:
    """Put a mapping in the data plane's map-cache. Empty rlocs with an
    action is a negative entry."""
    eid: EidPrefix
    rlocs: tuple[Rloc, ...]
    action: MapAction = MapAction.NO_ACTION
    ttl_s: float = 86400.0


@dataclass(frozen=True, slots=True)
class RemoveMapping:
    eid: EidPrefix


@dataclass(frozen=True, slots=True)
class Log:
    """One line a person can follow (info), with optional packet detail (debug).

    kind names an event a peer can repeat at will (a Map-Request answered, a
    Map-Register dropped): above debug the daemon logs the first of a kind in
    a window and then one summary per kind ("N more ... from X in the last
    10 s"), so an attacker cannot grow the log with its traffic. peer is the
    address the event is about (summaries count per peer)."""
    text: str
    detail: str = ""
    kind: str = ""
    peer: object = None


@dataclass(frozen=True, slots=True)
class Announce:
    """Advertise (up) or withdraw these prefixes to the routing system (a
    PITR's EID aggregates: lispctl.net.announce installs them where the BGP
    daemon picks them up)."""
    prefixes: tuple[EidPrefix, ...]
    up: bool


Effect = Union[Send, InstallMapping, RemoveMapping, Log, Announce]


@dataclass(frozen=True, slots=True)
class MissEvent:
    """A data-plane cache miss, as the ring buffer reports it."""
    eid: EidPrefix          # destination as a host prefix (/32 or /128)
    source: IPAddress
    packet: bytes = b""     # the missed IP packet, when the miss action dropped it (roles/holdq.py)


class Role(Protocol):
    def handle(self, data: bytes, src: Endpoint, dst: Endpoint, now: float) -> list[Effect]:
        """A control datagram arrived (src is the sender, dst our local address)."""

    def tick(self, now: float) -> list[Effect]:
        """Run timers that are due at `now`."""

    def next_deadline(self) -> float | None:
        """When tick() next has work, or None."""

    def snapshot(self) -> dict:
        """JSON-able state for the local API (status, map-cache, sites...)."""


@dataclass
class Effects:
    """Accumulator roles use internally. default_src(dst) -> Endpoint | None
    picks a source for sends that name none (a mobile node sends control
    traffic from an RLOC, never from the EID device)."""
    items: list = field(default_factory=list)
    default_src: Callable[[Endpoint], "Endpoint | None"] | None = None

    def send(self, payload: bytes, dst: Endpoint, src: Endpoint | None = None) -> None:
        if src is None and self.default_src is not None:
            src = self.default_src(dst)
        self.items.append(Send(payload, dst, src))

    def log(self, text: str, detail: str = "", kind: str = "", peer=None) -> None:
        self.items.append(Log(text, detail, kind, peer))
