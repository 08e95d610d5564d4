"""The vocabulary shared by roles, datapath and API.

Kept free of wire details so the data plane and the protocol code can each
convert to and from it without importing one another.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import IntEnum
from typing import Union

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


class MapAction(IntEnum):
    """ACT values of RFC 9301 section 5.4, reused as the data plane's negative actions."""
    NO_ACTION = 0
    NATIVELY_FORWARD = 1
    SEND_MAP_REQUEST = 2
    DROP = 3
    DROP_POLICY_DENIED = 4
    DROP_AUTH_FAILURE = 5


@dataclass(frozen=True, slots=True, order=True)
class EidPrefix:
    iid: int
    prefix: IPNetwork

    def __post_init__(self) -> None:
        if not 0 <= self.iid < 1 << 24:
            raise ValueError(f"instance ID {self.iid} is not a 24-bit value")

    @classmethod
    def parse(cls, text: str, iid: int = 0) -> "EidPrefix":
        """'10.1.0.0/16' or '[5]10.1.0.0/16' (instance ID in brackets, as LISPmob prints)."""
        text = text.strip()
        if text.startswith("["):
            close = text.index("]")
            iid, text = int(text[1:close]), text[close + 1:]
        return cls(iid, ipaddress.ip_network(text, strict=False))

    def __str__(self) -> str:
        return f"[{self.iid}]{self.prefix}" if self.iid else str(self.prefix)


@dataclass(frozen=True, slots=True)
class Rloc:
    """A locator as the data plane needs it."""
    address: IPAddress
    priority: int = 1
    weight: int = 100
    reachable: bool = True
    # UDP destination port of data to this locator; 0 = 4341. Non-zero only
    # on a NAT traversal path (docs/nat.md): a NATed xTR that an RTR reaches
    # at its translated port, or the RTR a NATed xTR sends to (4341). Data
    # to such a locator leaves from source port 4341 instead of a hashed one.
    port: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.priority <= 255 or not 0 <= self.weight <= 255:
            raise ValueError("priority and weight are 8-bit values")
        if not 0 <= self.port <= 0xFFFF:
            raise ValueError("port is a 16-bit value")
