"""The mobile node's EID device (like LISPmob's lmn0) and its source routing.

Applications must use the EID as their source address, wherever the host is
attached; encapsulated packets (and the controller's own control traffic)
must leave through a physical interface with that interface's RLOC as
source. This is done with policy routing, never by touching the main table:

    pref 0      from all      lookup local        (kernel)
    pref 100    from RLOC_1   lookup T_eth0       per uplink and family
    pref 100    from RLOC_2   lookup T_wlan0
    pref 110    from all      lookup T_eid        default dev lmn0 src EID
    pref 32766  from all      lookup main         (kernel, untouched)

A socket with no source yet (connect() of an unbound socket) matches no
"from RLOC" rule, reaches T_eid and gets the EID as source from the route's
preferred-source hint. A socket bound to an RLOC, and the datapath's FIB
lookup for an outer header whose source is that RLOC, match the uplink's
rule; T_<uplink> mirrors main's routes through that interface (connected
prefix, default gateway), so each RLOC leaves by its own interface.

The EID device is a veth pair (lmn0 <-> lmn0p) with ARP off, because:
- the kernel here has no `dummy` driver; TUN needs a process holding its fd
  or it has no carrier (and no IPv6);
- tc egress on lmn0 sees every locally originated packet routed to it, with
  an Ethernet header like a NIC's (the encap code is shared with XDP);
  NOARP means no neighbour resolution stalls those packets (the kernel uses
  lmn0's own MAC as destination);
- a packet the datapath does not redirect crosses to lmn0p, is addressed to
  another MAC, and is dropped: EID traffic never leaks out natively;
- decapsulated packets can be handed to the stack as if they arrived on
  lmn0 (tc bpf_redirect(lmn0p) or XDP_REDIRECT into lmn0p, which veth
  supports natively), so the reverse path of a remote EID is lmn0 and strict
  rp_filter agrees; passing them up on the physical interface also works
  (the EID is a local address) with rp_filter 0 or 2 there.
IPv6 address generation is off on both ends (no link-local, no DAD).

Everything added is recorded in a NetChanges journal and removed by
restore() (also on leaving `async with`); removing lmn0 also removes lmn0p
and the addresses on them.
"""
from __future__ import annotations

import ipaddress
import logging
import socket
from dataclasses import dataclass, field
from typing import Iterable

from ..mapping.types import IPAddress
from .changes import RTPROT_LISPCTL, Change, NetChanges, NetError

log = logging.getLogger(__name__)

DEFAULT_EID_TABLE = 4341
DEFAULT_UPLINK_TABLE_BASE = 4342
DEFAULT_RLOC_RULE_PRIORITY = 100
DEFAULT_EID_RULE_PRIORITY = 110
# 1500 minus the largest LISP overhead: outer IPv6 (40) + UDP (8) + LISP (8).
DEFAULT_EID_MTU = 1444

IFA_F_NODAD = 0x02
IFA_F_NOPREFIXROUTE = 0x200
RT_TABLE_MAIN = 254
RTN_UNICAST = 1
IN6_ADDR_GEN_MODE_NONE = 1
_NO_ADDRGEN = {"attrs": [["AF_INET6", {"attrs": [["IFLA_INET6_ADDR_GEN_MODE", IN6_ADDR_GEN_MODE_NONE]]}]]}


def _family(address: IPAddress) -> int:
    return socket.AF_INET if address.version == 4 else socket.AF_INET6


@dataclass
class Uplink:
    """A physical interface carrying one RLOC, with its own routing table."""
    ifname: str
    ifindex: int
    rloc: IPAddress
    table: int
    routes: list[dict] = field(default_factory=list)   # what was copied into the table
    changes: list[Change] = field(default_factory=list, repr=False)


class MobileNode:
    """Create lmn0, put the EIDs on it and set up source routing; undo it all on restore().

        async with MobileNode(["10.200.0.1", "fd00:200::1"], netns="mn") as mn:
            await mn.add_uplink("eth0", ipaddress.ip_address("192.0.2.10"))
            ...   # on handover: remove_uplink / add_uplink
    """

    def __init__(self, eids: Iterable[IPAddress | str], *, netns: str | None = None,
                 ifname: str = "lmn0", peer_ifname: str | None = None,
                 mtu: int = DEFAULT_EID_MTU, eid_table: int = DEFAULT_EID_TABLE,
                 uplink_table_base: int = DEFAULT_UPLINK_TABLE_BASE,
                 rloc_rule_priority: int = DEFAULT_RLOC_RULE_PRIORITY,
                 eid_rule_priority: int = DEFAULT_EID_RULE_PRIORITY) -> None:
        self.eids = [ipaddress.ip_address(e) if isinstance(e, str) else e for e in eids]
        if not self.eids:
            raise ValueError("a mobile node needs at least one EID")
        if not rloc_rule_priority < eid_rule_priority < 32766:
            raise ValueError("need rloc_rule_priority < eid_rule_priority < 32766 (main)")
        self.netns = netns
        self.ifname = ifname
        self.peer_ifname = peer_ifname or (ifname + "p")[:15]
        self.mtu = mtu
        self.eid_table = eid_table
        self.uplink_table_base = uplink_table_base
        self.rloc_rule_priority = rloc_rule_priority
        self.eid_rule_priority = eid_rule_priority
        self.ifindex: int | None = None
        self.peer_ifindex: int | None = None
        self.uplinks: dict[tuple[str, int], Uplink] = {}    # (ifname, 4|6) -> Uplink
        self._tables: dict[str, int] = {}
        self._nc: NetChanges | None = None

    @property
    def changes(self) -> NetChanges:
        if self._nc is None:
            raise NetError("mobile node is not set up")
        return self._nc

    def source_eid(self, family: int) -> IPAddress | None:
        """The EID used as source hint for family 4 or 6 (the first one configured)."""
        return next((e for e in self.eids if e.version == family), None)

    # -- lifecycle
    async def setup(self) -> None:
        """Create the EID device, its addresses, the EID table and the EID rule."""
        self._nc = nc = await NetChanges.open(self.netns)
        try:
            if await nc.ipr.link_lookup(ifname=self.ifname):
                raise NetError(f"{self.ifname} already exists; not taking it over", 17)
            await nc.add_link(ifname=self.ifname, kind="veth", peer={"ifname": self.peer_ifname})
            self.ifindex = (await nc.ipr.link_lookup(ifname=self.ifname))[0]
            self.peer_ifindex = (await nc.ipr.link_lookup(ifname=self.peer_ifname))[0]
            for index in (self.peer_ifindex, self.ifindex):
                # Before "up", or the kernel has already made a link-local address.
                await nc.ipr.link("set", index=index, arp=False, mtu=self.mtu, af_spec=_NO_ADDRGEN)
                await nc.ipr.link("set", index=index, state="up")
            for eid in self.eids:
                plen = 32 if eid.version == 4 else 128
                flags = 0 if eid.version == 4 else IFA_F_NODAD | IFA_F_NOPREFIXROUTE
                await nc.add_addr(index=self.ifindex, address=str(eid), prefixlen=plen, flags=flags)
            for version in (4, 6):
                src_eid = self.source_eid(version)
                if src_eid is None:
                    continue     # no EID of this family: its traffic stays native
                fam = _family(src_eid)
                await nc.add_route(family=fam, dst="0.0.0.0/0" if version == 4 else "::/0",
                                   table=self.eid_table, oif=self.ifindex, prefsrc=str(src_eid),
                                   proto=RTPROT_LISPCTL)
                await nc.add_rule(family=fam, priority=self.eid_rule_priority,
                                  table=self.eid_table, protocol=RTPROT_LISPCTL)
        except BaseException:
            await self.restore()
            raise

    async def add_uplink(self, ifname: str, rloc: IPAddress | str, *,
                         gateway: IPAddress | str | None = None) -> Uplink:
        """Route traffic sourced from `rloc` out of `ifname`.

        Copies main's unicast routes through `ifname` (same family as rloc)
        into the interface's table and adds "from rloc lookup <table>".
        With `gateway`, main's default routes are replaced by "default via
        gateway". Calling it again for the same interface and family
        re-syncs it (new RLOC after handover, gateway appeared later).
        """
        nc = self.changes
        rloc = ipaddress.ip_address(rloc) if isinstance(rloc, str) else rloc
        fam = _family(rloc)
        found = await nc.ipr.link_lookup(ifname=ifname)
        if not found:
            raise NetError(f"no interface {ifname}", 19)
        index = found[0]
        await self.remove_uplink(ifname, rloc.version)
        table = self._tables.setdefault(ifname, self.uplink_table_base + len(self._tables))
        uplink = Uplink(ifname, index, rloc, table)
        specs = await self._main_routes(fam, index)
        if gateway is not None:
            gw = ipaddress.ip_address(gateway) if isinstance(gateway, str) else gateway
            specs = [s for s in specs if s["dst_len"] != 0]
            specs.append({"family": fam, "dst": "0.0.0.0" if fam == socket.AF_INET else "::",
                          "dst_len": 0, "gateway": str(gw), "oif": index})
        try:
            for spec in specs:
                spec.update(table=table, proto=RTPROT_LISPCTL)
                uplink.changes.append(await nc.add_route(replace=True, **spec))
                uplink.routes.append(spec)
            uplink.changes.append(await nc.add_rule(
                family=fam, priority=self.rloc_rule_priority, src=str(rloc),
                src_len=32 if rloc.version == 4 else 128, table=table, protocol=RTPROT_LISPCTL))
        except BaseException:
            for change in reversed(uplink.changes):
                await nc.revert(change)
            raise
        self.uplinks[(ifname, rloc.version)] = uplink
        return uplink

    async def remove_uplink(self, ifname: str, family: int | None = None) -> None:
        """Remove the rule and table routes of an uplink (family 4, 6 or both). Absent is fine."""
        for version in (4, 6) if family is None else (family,):
            uplink = self.uplinks.pop((ifname, version), None)
            if uplink is None:
                continue
            for change in reversed(uplink.changes):
                await self.changes.revert(change)

    async def restore(self) -> None:
        """Remove everything setup() and add_uplink() added; safe to call twice."""
        nc, self._nc = self._nc, None
        if nc is None:
            return
        try:
            await nc.restore()
        finally:
            self.uplinks.clear()
            self.ifindex = self.peer_ifindex = None
            await nc.close()

    async def __aenter__(self) -> "MobileNode":
        await self.setup()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.restore()

    # -- helpers
    async def _main_routes(self, fam: int, index: int) -> list[dict]:
        specs = []
        async for msg in await self.changes.ipr.route("dump", family=fam, table=RT_TABLE_MAIN):
            if (msg.get_attr("RTA_OIF") != index or msg["type"] != RTN_UNICAST
                    or (msg.get_attr("RTA_TABLE") or msg["table"]) != RT_TABLE_MAIN):
                continue
            dst = msg.get_attr("RTA_DST") or ("0.0.0.0" if fam == socket.AF_INET else "::")
            spec = {"family": fam, "dst": dst, "dst_len": msg["dst_len"], "oif": index,
                    "scope": msg["scope"]}
            for attr, key in (("RTA_GATEWAY", "gateway"), ("RTA_PREFSRC", "prefsrc"),
                              ("RTA_PRIORITY", "priority")):
                if msg.get_attr(attr) is not None:
                    spec[key] = msg.get_attr(attr)
            specs.append(spec)
        return specs
