"""The watcher's pure part: rtnetlink messages -> view -> events -> locators. No kernel needed."""
import ipaddress
import socket

import pytest
from pyroute2.netlink.rtnl import (
    RTM_DELADDR, RTM_DELLINK, RTM_DELROUTE, RTM_NEWADDR, RTM_NEWLINK, RTM_NEWROUTE,
)
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from lispctl.mapping.types import Rloc
from lispctl.net.watch import (
    AddressAdded, AddressRemoved, GatewayChanged, LinkDown, LinkUp, LocatorSpec, NetView,
    apply_message, diff_link, diff_views, local_locators,
)

UP_RUNNING = 0x1 | 0x40 | 0x10000
ip = ipaddress.ip_address


def link(index, name, flags=UP_RUNNING, mtype=RTM_NEWLINK):
    m = ifinfmsg()
    m["header"] = {"type": mtype}
    m["index"], m["flags"] = index, flags
    m["attrs"] = [("IFLA_IFNAME", name)]
    return m


def addr(index, address, plen, flags=0, scope=0, mtype=RTM_NEWADDR):
    m = ifaddrmsg()
    m["header"] = {"type": mtype}
    a = ip(address)
    m["family"] = socket.AF_INET if a.version == 4 else socket.AF_INET6
    m["index"], m["prefixlen"], m["flags"], m["scope"] = index, plen, flags & 0xFF, scope
    m["attrs"] = [("IFA_ADDRESS", address), ("IFA_FLAGS", flags)]
    if a.version == 4:
        m["attrs"].append(("IFA_LOCAL", address))
    return m


def default_route(oif, gw, metric=0, mtype=RTM_NEWROUTE, table=254):
    m = rtmsg()
    m["header"] = {"type": mtype}
    m["family"] = socket.AF_INET if ip(gw).version == 4 else socket.AF_INET6
    m["dst_len"], m["table"], m["type"] = 0, table, 1
    m["attrs"] = [("RTA_TABLE", table), ("RTA_GATEWAY", gw), ("RTA_OIF", oif), ("RTA_PRIORITY", metric)]
    return m


def fold(*msgs, view=None):
    view = view or NetView()
    events = []
    for m in msgs:
        new = apply_message(view, m)
        index = m["index"] if m["header"]["type"] not in (RTM_NEWROUTE, RTM_DELROUTE) else None
        events += diff_views(view, new) if index is None else diff_link(view.links.get(index), new.links.get(index))
        view = new
    return view, events


def test_link_up_down_and_addresses():
    view, events = fold(link(2, "eth0"), addr(2, "192.0.2.10", 24))
    assert events == [LinkUp("eth0"), AddressAdded("eth0", ip("192.0.2.10"), 24)]
    view, events = fold(link(2, "eth0", flags=0x1 | 0x10000), view=view)   # up, not running
    assert events == [LinkDown("eth0")]
    view, events = fold(link(2, "eth0"), addr(2, "192.0.2.10", 24, mtype=RTM_DELADDR), view=view)
    assert events == [LinkUp("eth0"), AddressRemoved("eth0", ip("192.0.2.10"), 24)]


def test_ignores_link_local_host_scope_tentative_and_dadfailed():
    view, events = fold(
        link(1, "lo"), addr(1, "127.0.0.1", 8, scope=254), addr(1, "::1", 128, scope=254),
        link(2, "eth0"), addr(2, "fe80::1", 64, scope=253), addr(2, "169.254.3.3", 16),
        addr(2, "2001:db8::5", 64, flags=0x40), addr(2, "2001:db8::6", 64, flags=0x08))
    assert not [e for e in events if isinstance(e, AddressAdded)]
    # DAD completes: the same address is announced again without the tentative flag.
    view, events = fold(addr(2, "2001:db8::5", 64, flags=0x80), view=view)
    assert events == [AddressAdded("eth0", ip("2001:db8::5"), 64)]
    # A lifetime refresh (flags change only) is not a change.
    view, events = fold(addr(2, "2001:db8::5", 64, flags=0x80 | 0x20), view=view)
    assert events == []


def test_prefix_change_is_remove_then_add():
    view, _ = fold(link(2, "eth0"), addr(2, "192.0.2.10", 24))
    _, events = fold(addr(2, "192.0.2.10", 25), view=view)
    assert events == [AddressRemoved("eth0", ip("192.0.2.10"), 24), AddressAdded("eth0", ip("192.0.2.10"), 25)]


def test_link_delete_and_rename():
    view, _ = fold(link(2, "eth0"), addr(2, "192.0.2.10", 24))
    _, events = fold(link(2, "wan0"), view=view)
    assert events == [AddressRemoved("eth0", ip("192.0.2.10"), 24), LinkDown("eth0"),
                      LinkUp("wan0"), AddressAdded("wan0", ip("192.0.2.10"), 24)]
    gone, events = fold(link(2, "eth0", mtype=RTM_DELLINK), view=view)
    assert events == [AddressRemoved("eth0", ip("192.0.2.10"), 24), LinkDown("eth0")]
    assert gone.by_name("eth0") is None


def test_gateways_follow_main_table_defaults():
    view, _ = fold(link(2, "eth0"), addr(2, "192.0.2.10", 24))
    view, events = fold(default_route(2, "192.0.2.1", metric=100), default_route(2, "192.0.2.254", table=7),
                        view=view)
    assert events == [GatewayChanged("eth0", 4, ip("192.0.2.1"))]
    view, events = fold(default_route(2, "192.0.2.2", metric=50), view=view)
    assert events == [GatewayChanged("eth0", 4, ip("192.0.2.2"))]
    view, events = fold(default_route(2, "192.0.2.2", metric=50, mtype=RTM_DELROUTE), view=view)
    assert events == [GatewayChanged("eth0", 4, ip("192.0.2.1"))]
    # Admin down flushes IPv4 routes without a notification; the view must follow.
    view, events = fold(link(2, "eth0", flags=0), view=view)
    assert events == [LinkDown("eth0"), GatewayChanged("eth0", 4, None)]


def test_local_locators():
    view, _ = fold(link(2, "eth0"), addr(2, "192.0.2.10", 24), addr(2, "192.0.2.11", 24, flags=0x01),
                   addr(2, "2001:db8::10", 64),
                   link(3, "wlan0", flags=0), addr(3, "198.51.100.7", 24),
                   link(4, "wwan0"))
    specs = [LocatorSpec("eth0", 4, priority=1, weight=50), LocatorSpec("eth0", 6, 2, 100),
             LocatorSpec("wlan0", 4, 1, 50), LocatorSpec("wwan0", 4), LocatorSpec("missing0", 6)]
    assert local_locators(view, specs) == [
        Rloc(ip("192.0.2.10"), 1, 50, True),          # primary, not the secondary .11
        Rloc(ip("2001:db8::10"), 2, 100, True),
        Rloc(ip("198.51.100.7"), 1, 50, False),       # address kept, link down
    ]
    view, _ = fold(link(3, "wlan0"), addr(2, "192.0.2.10", 24, mtype=RTM_DELADDR), view=view)
    assert local_locators(view, specs)[:2] == [Rloc(ip("192.0.2.11"), 1, 50, True),
                                               Rloc(ip("2001:db8::10"), 2, 100, True)]
    assert local_locators(view, specs)[2].reachable


def test_locator_spec_rejects_bad_family():
    with pytest.raises(ValueError):
        LocatorSpec("eth0", 5)
