"""Conversions between wire records and the shared vocabulary
(lispctl.mapping.types.EidPrefix / Rloc).

They raise MalformedMessage (offset -1) when a received record cannot be
expressed in that vocabulary, so a caller handling bytes from the network
catches one exception for decode and conversion alike.
"""
from __future__ import annotations

import ipaddress
from ipaddress import IPv4Address, IPv6Address

from lispctl.mapping.types import EidPrefix, Rloc

from .addresses import Address, InstanceId
from .errors import MalformedMessage
from .records import REQUEST_RECORD_N, EidRecord, LocatorRecord, RequestRecord


def to_eid_prefix(address: Address, mask_len: int) -> EidPrefix:
    """An EID address (plain IPv4/IPv6, or wrapped in an Instance-ID LCAF)
    and its mask length -> EidPrefix. Host bits beyond mask_len are cleared
    (peers sometimes send them)."""
    iid = 0
    if type(address) is InstanceId:
        iid = address.iid
        address = address.address
        if iid >= 1 << 24:
            raise MalformedMessage(f"instance ID {iid} exceeds 24 bits")
    if type(address) is IPv4Address:
        if mask_len > 32:
            raise MalformedMessage(f"mask length {mask_len} too long for IPv4")
        net = ipaddress.IPv4Network((int(address) & (0xFFFFFFFF ^ (0xFFFFFFFF >> mask_len)), mask_len))
    elif type(address) is IPv6Address:
        if mask_len > 128:
            raise MalformedMessage(f"mask length {mask_len} too long for IPv6")
        full = (1 << 128) - 1
        net = ipaddress.IPv6Network((int(address) & (full ^ (full >> mask_len)), mask_len))
    else:
        raise MalformedMessage(f"EID {address!r} is not an IP prefix")
    return EidPrefix(iid, net)


def from_eid_prefix(prefix: EidPrefix, iid_lcaf: bool | None = None) -> tuple[Address, int]:
    """EidPrefix -> (wire address, mask length). The address is wrapped in an
    Instance-ID LCAF when iid != 0, or always/never if iid_lcaf says so."""
    addr: Address = prefix.prefix.network_address
    if iid_lcaf or (iid_lcaf is None and prefix.iid != 0):
        addr = InstanceId(prefix.iid, addr, 0)
    elif prefix.iid != 0:
        raise ValueError("a non-zero instance ID needs the Instance-ID LCAF")
    return addr, prefix.prefix.prefixlen


def source_eid_prefix(address: Address) -> EidPrefix | None:
    """A Map-Request's Source-EID (an address, plain or in an Instance-ID
    LCAF) as a host EidPrefix; None for AFI 0 or anything else."""
    inner = address.address if type(address) is InstanceId else address
    if type(inner) is IPv4Address:
        return to_eid_prefix(address, 32)
    if type(inner) is IPv6Address:
        return to_eid_prefix(address, 128)
    return None


def record_prefix(record: EidRecord | RequestRecord) -> EidPrefix:
    """The EidPrefix of an EID record or Map-Request record."""
    return to_eid_prefix(record.eid, record.mask_len)


def request_record(prefix: EidPrefix, iid_lcaf: bool | None = None, *, notify: bool = False) -> RequestRecord:
    """notify: set RFC 9437's N bit (subscribe to this prefix)."""
    addr, ml = from_eid_prefix(prefix, iid_lcaf)
    return RequestRecord(addr, ml, REQUEST_RECORD_N if notify else 0)


def eid_record(prefix: EidPrefix, locators=(), *, ttl: int = 1440, act: int = 0,
               authoritative: bool = False, map_version: int = 0,
               iid_lcaf: bool | None = None) -> EidRecord:
    """An EidRecord for prefix; locators may be Rloc or LocatorRecord items."""
    addr, ml = from_eid_prefix(prefix, iid_lcaf)
    locs = tuple(l if type(l) is LocatorRecord else rloc_to_locator(l) for l in locators)
    return EidRecord(addr, ml, locs, ttl, int(act), authoritative, map_version)


def locator_to_rloc(locator: LocatorRecord) -> Rloc:
    """LocatorRecord -> Rloc (unicast priority/weight, R bit as reachable)."""
    a = locator.address
    if type(a) is not IPv4Address and type(a) is not IPv6Address:
        raise MalformedMessage(f"locator {a!r} is not an IP address")
    return Rloc(a, locator.priority, locator.weight, locator.reachable)


def rloc_to_locator(rloc: Rloc, *, local: bool = False, probed: bool = False,
                    m_priority: int = 255, m_weight: int = 0) -> LocatorRecord:
    return LocatorRecord(rloc.address, rloc.priority, rloc.weight, m_priority, m_weight,
                         local, probed, rloc.reachable)
