"""Watch interfaces, addresses and default gateways through rtnetlink.

`InterfaceWatcher` subscribes to the rtnetlink multicast groups, keeps a
`NetView` (per interface: index, admin/oper state, usable global addresses,
default gateways of the main table) and turns every kernel notification into
typed events: LinkUp, LinkDown, AddressAdded, AddressRemoved, GatewayChanged.
No polling: the daemon hooks `fileno()` with `loop.add_reader` and calls
`drain()`, or iterates `events()`.

`local_locators(view, specs)` is a pure function from the view to the local
locator set, so a role can diff the old and the new set.

How the view stays right: the event socket is bound to the groups *before*
the initial dump (made on a second socket), and queued events are applied
on top of the dump in arrival order. Replaying events older than the dump
can cause a transient flap but always converges on the kernel's state. If
the kernel drops notifications (ENOBUFS), the watcher discards what is still
queued (it predates the loss), dumps again and reports the difference as
events.
"""
from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
from collections import deque
from dataclasses import dataclass, field, replace
from typing import AsyncIterator, Iterable, Mapping, Optional, Union

from pyroute2 import netns as pr_netns
from pyroute2.netlink import NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR
from pyroute2.netlink.rtnl import (
    RTM_DELADDR,
    RTM_DELLINK,
    RTM_DELNEIGH,
    RTM_DELQDISC,
    RTM_DELROUTE,
    RTM_DELRULE,
    RTM_DELTFILTER,
    RTM_GETADDR,
    RTM_GETLINK,
    RTM_GETROUTE,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_NEWNEIGH,
    RTM_NEWQDISC,
    RTM_NEWROUTE,
    RTM_NEWRULE,
    RTM_NEWTFILTER,
    RTMGRP_IPV4_IFADDR,
    RTMGRP_IPV4_ROUTE,
    RTMGRP_IPV4_RULE,
    RTMGRP_IPV6_IFADDR,
    RTMGRP_IPV6_ROUTE,
    RTMGRP_IPV6_RULE,
    RTMGRP_LINK,
    RTMGRP_NEIGH,
    RTMGRP_TC,
)
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.marshal import MarshalRtnl
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from ..mapping.types import IPAddress, Rloc
from .changes import NetError

log = logging.getLogger(__name__)

NETLINK_ROUTE = 0
NLM_F_DUMP_INTR = 0x10
TC_MESSAGES = (RTM_NEWQDISC, RTM_DELQDISC, RTM_NEWTFILTER, RTM_DELTFILTER)
IFF_UP = 0x1
IFF_RUNNING = 0x40
IFF_LOWER_UP = 0x10000
IFA_F_SECONDARY = 0x01          # IPv4 secondary; IPv6 temporary (privacy) address
IFA_F_DADFAILED = 0x08
IFA_F_DEPRECATED = 0x20
IFA_F_TENTATIVE = 0x40
RT_SCOPE_UNIVERSE = 0
RT_TABLE_MAIN = 254
RTN_UNICAST = 1


# ---------------------------------------------------------------- the view

@dataclass(frozen=True, slots=True)
class IfAddress:
    """A usable global address. Equality ignores flags (a lifetime refresh is no change)."""
    address: IPAddress
    prefixlen: int
    flags: int = field(default=0, compare=False)

    @property
    def family(self) -> int:
        return self.address.version


@dataclass(frozen=True, slots=True)
class Link:
    index: int
    ifname: str
    admin_up: bool = False      # IFF_UP
    running: bool = False       # IFF_RUNNING: operstate UP or UNKNOWN (carrier and not dormant)
    carrier: bool = False       # IFF_LOWER_UP
    operstate: str = "UNKNOWN"
    addresses: frozenset[IfAddress] = frozenset()
    # (family, metric, gateway) of unicast default routes in the main table via this link
    default_routes: frozenset[tuple[int, int, IPAddress]] = frozenset()

    @property
    def up(self) -> bool:
        """Usable for traffic: administratively up and the kernel says it is running."""
        return self.admin_up and self.running

    def gateway(self, family: int) -> Optional[IPAddress]:
        """The default gateway with the lowest metric for family 4 or 6, if any."""
        best = min((r for r in self.default_routes if r[0] == family), default=None,
                   key=lambda r: (r[1], int(r[2])))
        return best[2] if best else None


@dataclass(frozen=True, slots=True)
class NetView:
    """An immutable snapshot: interface index -> Link."""
    links: Mapping[int, Link] = field(default_factory=dict)

    def by_name(self, ifname: str) -> Optional[Link]:
        for link in self.links.values():
            if link.ifname == ifname:
                return link
        return None

    def index(self, ifname: str) -> Optional[int]:
        link = self.by_name(ifname)
        return link.index if link else None

    def is_up(self, ifname: str) -> bool:
        link = self.by_name(ifname)
        return bool(link and link.up)

    def addresses(self, ifname: str, family: int | None = None) -> list[IfAddress]:
        link = self.by_name(ifname)
        if link is None:
            return []
        return sorted((a for a in link.addresses if family in (None, a.family)),
                      key=lambda a: (a.family, int(a.address)))

    def gateway(self, ifname: str, family: int) -> Optional[IPAddress]:
        link = self.by_name(ifname)
        return link.gateway(family) if link else None


# ---------------------------------------------------------------- events

@dataclass(frozen=True, slots=True)
class LinkUp:
    ifname: str


@dataclass(frozen=True, slots=True)
class LinkDown:
    ifname: str


@dataclass(frozen=True, slots=True)
class AddressAdded:
    ifname: str
    address: IPAddress
    prefixlen: int


@dataclass(frozen=True, slots=True)
class AddressRemoved:
    ifname: str
    address: IPAddress
    prefixlen: int


@dataclass(frozen=True, slots=True)
class GatewayChanged:
    """The best default gateway of the main table via ifname changed (None: no default route)."""
    ifname: str
    family: int
    gateway: Optional[IPAddress]


NetEvent = Union[LinkUp, LinkDown, AddressAdded, AddressRemoved, GatewayChanged]


def diff_link(old: Optional[Link], new: Optional[Link]) -> list[NetEvent]:
    """Events that turn `old` into `new` (same ifindex). Removals come before additions."""
    events: list[NetEvent] = []
    renamed = old is not None and new is not None and old.ifname != new.ifname
    # A rename is reported as the old name going away and the new one appearing.
    gone_addrs = old.addresses if old and (renamed or new is None) else (
        old.addresses - new.addresses if old and new else frozenset())
    new_addrs = new.addresses if new and (renamed or old is None) else (
        new.addresses - old.addresses if old and new else frozenset())
    old_up = bool(old and old.up)
    new_up = bool(new and new.up)
    if old is not None:
        for a in sorted(gone_addrs, key=lambda a: (a.family, int(a.address))):
            events.append(AddressRemoved(old.ifname, a.address, a.prefixlen))
        if old_up and (renamed or not new_up):
            events.append(LinkDown(old.ifname))
        if renamed or new is None:                  # the old link is gone
            for fam in (4, 6):
                if old.gateway(fam) is not None:
                    events.append(GatewayChanged(old.ifname, fam, None))
    if new is not None:
        if new_up and (renamed or not old_up):
            events.append(LinkUp(new.ifname))
        for a in sorted(new_addrs, key=lambda a: (a.family, int(a.address))):
            events.append(AddressAdded(new.ifname, a.address, a.prefixlen))
    if new is not None:
        for fam in (4, 6):
            before = None if old is None or renamed else old.gateway(fam)
            after = new.gateway(fam)
            if before != after:
                events.append(GatewayChanged(new.ifname, fam, after))
    return events


def diff_views(old: NetView, new: NetView) -> list[NetEvent]:
    events: list[NetEvent] = []
    for index in sorted(set(old.links) | set(new.links)):
        events += diff_link(old.links.get(index), new.links.get(index))
    return events


# ---------------------------------------------------------------- locators

@dataclass(frozen=True, slots=True)
class LocatorSpec:
    """Announce a locator taken from interface `ifname`, address family 4 or 6."""
    ifname: str
    family: int
    priority: int = 1
    weight: int = 100

    def __post_init__(self) -> None:
        if self.family not in (4, 6):
            raise ValueError(f"family must be 4 or 6, not {self.family}")


def preferred_address(view: NetView, ifname: str, family: int) -> Optional[IfAddress]:
    """The one address an interface contributes: primary/non-temporary, non-deprecated, lowest."""
    addrs = view.addresses(ifname, family)
    if not addrs:
        return None
    return min(addrs, key=lambda a: (bool(a.flags & IFA_F_SECONDARY),
                                     bool(a.flags & IFA_F_DEPRECATED), int(a.address)))


def local_locators(view: NetView, specs: Iterable[LocatorSpec]) -> list[Rloc]:
    """The current local locator set, in spec order, one Rloc per spec that has an address.

    A spec whose interface has no usable address of its family contributes
    nothing (there is no address to announce). One whose interface has the
    address but is down gives an Rloc with reachable=False. An address named
    by two specs is listed once, with the first spec's priority and weight.
    """
    out: list[Rloc] = []
    seen: set[IPAddress] = set()
    for spec in specs:
        addr = preferred_address(view, spec.ifname, spec.family)
        if addr is None or addr.address in seen:
            continue
        seen.add(addr.address)
        out.append(Rloc(addr.address, spec.priority, spec.weight, view.is_up(spec.ifname)))
    return out


# ---------------------------------------------------------------- message -> view

def _attr(msg, name):
    return msg.get_attr(name)


def _usable(msg) -> Optional[IfAddress]:
    """The IfAddress of an RTM_NEWADDR, or None if it must not be used as a locator."""
    flags = _attr(msg, "IFA_FLAGS")
    flags = msg["flags"] if flags is None else flags
    if flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED):
        return None
    if msg["scope"] != RT_SCOPE_UNIVERSE:       # host (127.0.0.1, ::1) and link scope
        return None
    text = _attr(msg, "IFA_LOCAL") or _attr(msg, "IFA_ADDRESS")
    if text is None:
        return None
    address = ipaddress.ip_address(text)
    if address.is_link_local or address.is_loopback:
        return None
    return IfAddress(address, msg["prefixlen"], flags)


def _default_route(msg):
    """(family, metric, gateway, oif) list for a main-table unicast default route message."""
    table = _attr(msg, "RTA_TABLE") or msg["table"]
    if table != RT_TABLE_MAIN or msg["dst_len"] != 0 or msg["type"] != RTN_UNICAST:
        return []
    fam = 4 if msg["family"] == socket.AF_INET else 6
    metric = _attr(msg, "RTA_PRIORITY") or 0
    hops = []
    gw, oif = _attr(msg, "RTA_GATEWAY"), _attr(msg, "RTA_OIF")
    if gw and oif:
        hops.append((gw, oif))
    for nh in _attr(msg, "RTA_MULTIPATH") or ():
        if nh.get_attr("RTA_GATEWAY"):
            hops.append((nh.get_attr("RTA_GATEWAY"), nh["oif"]))
    return [(fam, metric, ipaddress.ip_address(g), o) for g, o in hops]


def apply_message(view: NetView, msg) -> NetView:
    """Fold one rtnetlink message (pyroute2-decoded) into the view."""
    mtype = msg["header"]["type"]
    links = view.links
    if mtype in (RTM_NEWLINK, RTM_DELLINK):
        index = msg["index"]
        old = links.get(index)
        if mtype == RTM_DELLINK:
            if old is None:
                return view
            links = dict(links)
            del links[index]
            return NetView(links)
        flags = msg["flags"]
        name = _attr(msg, "IFLA_IFNAME") or (old.ifname if old else f"if{index}")
        base = old if old is not None else Link(index, name)
        new = replace(base, ifname=name, admin_up=bool(flags & IFF_UP),
                      running=bool(flags & IFF_RUNNING), carrier=bool(flags & IFF_LOWER_UP),
                      operstate=_attr(msg, "IFLA_OPERSTATE") or base.operstate)
        if not new.admin_up:
            # IPv4 flushes routes of a downed link without telling anyone.
            new = replace(new, default_routes=frozenset(r for r in new.default_routes if r[0] != 4))
    elif mtype in (RTM_NEWADDR, RTM_DELADDR):
        old = links.get(msg["index"])
        if old is None:
            return view
        text = _attr(msg, "IFA_LOCAL") or _attr(msg, "IFA_ADDRESS")
        if text is None:
            return view
        address = ipaddress.ip_address(text)
        kept = frozenset(a for a in old.addresses if a.address != address)
        usable = _usable(msg) if mtype == RTM_NEWADDR else None
        addresses = kept | {usable} if usable else kept
        routes = old.default_routes
        if mtype == RTM_DELADDR and address.version == 4 and not any(
                a.family == 4 for a in addresses):
            # Removing a link's last IPv4 address flushes its IPv4 routes, silently.
            routes = frozenset(r for r in routes if r[0] != 4)
        new = replace(old, addresses=addresses, default_routes=routes)
    elif mtype in (RTM_NEWROUTE, RTM_DELROUTE):
        hops = _default_route(msg)
        new_links = dict(links)
        for oif in {h[3] for h in hops}:
            old = new_links.get(oif)
            if old is None:
                continue
            keys = {h[:3] for h in hops if h[3] == oif}
            if mtype == RTM_NEWROUTE:
                # Same family and metric means the same kernel route, possibly replaced.
                slots = {k[:2] for k in keys}
                routes = frozenset(r for r in old.default_routes if r[:2] not in slots) | keys
            else:
                routes = old.default_routes - keys
            new_links[oif] = replace(old, default_routes=routes)
        return view if new_links == links else NetView(new_links)
    else:
        return view
    if new == old:
        return view
    links = dict(links)
    links[new.index] = new
    return NetView(links)


# ---------------------------------------------------------------- sockets

def _netlink_socket(netns: str | None) -> socket.socket:
    try:
        if netns:
            # flags=0: do not create the namespace if it does not exist.
            return pr_netns.create_socket(netns, socket.AF_NETLINK, socket.SOCK_RAW,
                                          NETLINK_ROUTE, flags=0)
        return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
    except OSError as exc:
        raise NetError(f"cannot open rtnetlink socket in netns {netns!r}: {exc}", exc.errno) from exc


class _Dumper:
    """Blocking dumps on a socket of its own (not subscribed to any group)."""

    def __init__(self, sock: socket.socket, timeout: float) -> None:
        self.sock = sock
        self.sock.settimeout(timeout)
        self.sock.bind((0, 0))
        self.marshal = MarshalRtnl()
        self.seq = 0

    def dump(self, msg_class, msg_type: int) -> list:
        for _ in range(5):
            self.seq += 1
            req = msg_class()
            req["family"] = socket.AF_UNSPEC
            req["header"]["type"] = msg_type
            req["header"]["flags"] = NLM_F_REQUEST | NLM_F_DUMP
            req["header"]["sequence_number"] = self.seq
            req["header"]["pid"] = 0
            req.encode()
            self.sock.send(req.data)
            out, interrupted = [], False
            while True:
                data = self.sock.recv(1 << 20)
                done = False
                for msg in self.marshal.parse(data):
                    if msg["header"]["sequence_number"] != self.seq:
                        continue
                    if msg["header"]["flags"] & NLM_F_DUMP_INTR:
                        interrupted = True
                    if msg["header"]["type"] == NLMSG_DONE:
                        done = True
                    elif msg["header"]["type"] == NLMSG_ERROR:
                        if msg["header"].get("error") is not None:
                            raise NetError(f"dump {msg_type}: {msg['header']['error']}")
                        done = True
                    else:
                        out.append(msg)
                if done:
                    break
            if not interrupted:
                return out
        raise NetError(f"dump {msg_type} kept being interrupted")


class InterfaceWatcher:
    """The live view of interfaces plus a stream of change events.

    Use with `with InterfaceWatcher(netns) as w:` (or open()/close()). Then
    either `async for ev in w.events(): ...` or, for a hand-made loop,
    `loop.add_reader(w.fileno(), lambda: handle(w.drain()))`. `w.view` is
    always the state after the events returned so far.

    track_gateways=False leaves out route notifications, which on a router
    with a large table would be a flood nobody here needs.

    track_forwarding=True also subscribes to route, rule and neighbour
    notifications without parsing them into the view (unless track_gateways):
    `forwarding_changes` counts every link, address, route, rule and
    neighbour notification (and every re-dump after a loss), so whoever
    caches the kernel's forwarding answers (the data plane's next-hop cache)
    knows when to drop them. It also subscribes to traffic-control
    notifications: `tc_changes` counts qdisc and filter changes (what the
    data plane's hand-over to a veth peer must not skip), and `link_changes`
    the link notifications (a device's offloads among them, which decide
    what the hand-over may skip).
    """

    def __init__(self, netns: str | None = None, *, track_gateways: bool = True,
                 track_forwarding: bool = False,
                 rcvbuf: int = 4 << 20, dump_timeout: float = 5.0) -> None:
        self.netns = netns
        self.track_gateways = track_gateways
        self.track_forwarding = track_forwarding
        self.forwarding_changes = 0
        self.tc_changes = 0
        self.link_changes = 0
        self.rcvbuf = rcvbuf
        self.dump_timeout = dump_timeout
        self.view = NetView()
        self.resyncs = 0            # how many times the kernel dropped events and we re-dumped
        self._sock: socket.socket | None = None
        self._dumper: _Dumper | None = None
        self._marshal = MarshalRtnl()
        self._pending: deque[NetEvent] = deque()

    # -- lifecycle
    def open(self) -> "InterfaceWatcher":
        groups = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR
        if self.track_gateways or self.track_forwarding:
            groups |= RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE
        if self.track_forwarding:
            groups |= RTMGRP_NEIGH | RTMGRP_IPV4_RULE | RTMGRP_IPV6_RULE | RTMGRP_TC
        sock = _netlink_socket(self.netns)
        try:
            try:
                sock.setsockopt(socket.SOL_SOCKET, 33, self.rcvbuf)  # SO_RCVBUFFORCE (root)
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
            sock.bind((0, groups))      # subscribe first, then dump: nothing falls between
            sock.setblocking(False)
            self._dumper = _Dumper(_netlink_socket(self.netns), self.dump_timeout)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self.view = self._snapshot()
        return self

    def close(self) -> None:
        for s in (self._sock, self._dumper.sock if self._dumper else None):
            if s is not None:
                s.close()
        self._sock = self._dumper = None

    def __enter__(self) -> "InterfaceWatcher":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- reading
    def fileno(self) -> int:
        if self._sock is None:
            raise NetError("watcher is not open")
        return self._sock.fileno()

    def drain(self) -> list[NetEvent]:
        """Read every pending notification without blocking; return the resulting events."""
        if self._sock is None:
            raise NetError("watcher is not open")
        events = list(self._pending)
        self._pending.clear()
        while True:
            try:
                data = self._sock.recv(1 << 20)
            except (BlockingIOError, InterruptedError):
                return events
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                # The kernel dropped notifications. What is still queued predates the
                # loss, so replaying it on a fresh dump could resurrect stale state:
                # throw it away, then dump. Everything queued from here on is newer.
                log.warning("rtnetlink overflow; re-dumping interfaces")
                self.resyncs += 1
                self.forwarding_changes += 1
                self.tc_changes += 1
                self.link_changes += 1
                self._discard_queued()
                fresh = self._snapshot()
                events += diff_views(self.view, fresh)
                self.view = fresh
                continue
            for msg in self._marshal.parse(data):
                events += self._apply(msg)

    def _discard_queued(self) -> None:
        sock = self._sock
        if sock is None:
            return
        while True:
            try:
                sock.recv(1 << 20)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise

    def _apply(self, msg) -> list[NetEvent]:
        mtype = msg["header"]["type"]
        if mtype in TC_MESSAGES:
            self.tc_changes += 1
            return []
        if mtype in (RTM_NEWLINK, RTM_DELLINK):
            self.link_changes += 1
        if mtype not in (RTM_NEWLINK, RTM_DELLINK, RTM_NEWADDR, RTM_DELADDR, RTM_NEWROUTE,
                         RTM_DELROUTE, RTM_NEWNEIGH, RTM_DELNEIGH, RTM_NEWRULE, RTM_DELRULE):
            return []
        self.forwarding_changes += 1
        if mtype in (RTM_NEWNEIGH, RTM_DELNEIGH, RTM_NEWRULE, RTM_DELRULE) or \
                (mtype in (RTM_NEWROUTE, RTM_DELROUTE) and not self.track_gateways):
            return []           # subscribed for forwarding_changes only
        old = self.view
        new = apply_message(old, msg)
        if new is old:
            return []
        self.view = new
        if mtype in (RTM_NEWROUTE, RTM_DELROUTE):
            return diff_views(old, new)
        index = msg["index"]
        return diff_link(old.links.get(index), new.links.get(index))

    async def wait(self) -> list[NetEvent]:
        """Wait until there is at least one event; return all events available now.

        The reader is registered only while waiting, so a cancelled or
        abandoned caller leaves nothing behind on the loop.
        """
        loop = asyncio.get_running_loop()
        while True:
            events = self.drain()
            if events:
                return events
            readable = loop.create_future()
            fd = self.fileno()
            loop.add_reader(fd, lambda: None if readable.done() else readable.set_result(None))
            try:
                await readable
            finally:
                loop.remove_reader(fd)

    async def next_event(self) -> NetEvent:
        while not self._pending:
            self._pending.extend(await self.wait())
        return self._pending.popleft()

    async def events(self) -> AsyncIterator[NetEvent]:
        """Yield events as the kernel reports them, until cancelled."""
        while True:
            yield await self.next_event()

    def __aiter__(self) -> AsyncIterator[NetEvent]:
        return self.events()

    # -- dumps
    def _snapshot(self) -> NetView:
        assert self._dumper is not None
        view = NetView()
        kinds = [(ifinfmsg, RTM_GETLINK), (ifaddrmsg, RTM_GETADDR)]
        if self.track_gateways:
            kinds.append((rtmsg, RTM_GETROUTE))
        for msg_class, msg_type in kinds:
            for msg in self._dumper.dump(msg_class, msg_type):
                view = apply_message(view, msg)
        return view
