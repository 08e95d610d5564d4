"""The mobile node's EID device and source routing, in a namespace with two uplinks."""
import ipaddress
import socket

import pytest
from pyroute2 import AsyncIPRoute
from pyroute2 import netns as pr_netns

from lispctl.net import EidRoutes, MobileNode, NetError, RTPROT_LISPCTL
from lispctl.net.mobile import DEFAULT_EID_TABLE

from .conftest import run

EID4, EID6 = "10.200.0.1", "fd00:200::1"
RLOC0, RLOC0_6, RLOC1 = "192.0.2.10", "2001:db8:1::10", "198.51.100.20"
REMOTE4, REMOTE6 = "203.0.113.7", "2001:db8:ffff::7"
IFF_NOARP = 0x80


async def snapshot(ipr):
    """Everything restore() must give back: links, addresses, routes of all tables, rules."""
    links = sorted([(m["index"], m.get_attr("IFLA_IFNAME"), m["flags"] & (0x1 | IFF_NOARP)) async for m in await ipr.link("dump")])
    addrs = sorted([(m["index"], m.get_attr("IFA_ADDRESS"), m["prefixlen"]) async for m in await ipr.addr("dump")])
    routes = sorted([tuple(str(x) for x in (
        m["family"], m.get_attr("RTA_TABLE"), m.get_attr("RTA_DST"), m["dst_len"], m.get_attr("RTA_OIF"),
        m.get_attr("RTA_GATEWAY"), m.get_attr("RTA_PREFSRC"), m.get_attr("RTA_PRIORITY"), m["type"],
        m["proto"])) async for m in await ipr.route("dump")])
    rules = sorted([tuple(str(x) for x in (
        m["family"], m.get_attr("FRA_PRIORITY"), m.get_attr("FRA_TABLE"), m.get_attr("FRA_SRC"),
        m["src_len"], m.get_attr("FRA_PROTOCOL"))) async for m in await ipr.rule("dump")])
    return {"links": links, "addrs": addrs, "routes": routes, "rules": rules}


def assert_same(before, after):
    for key in before:
        missing, extra = set(before[key]) - set(after[key]), set(after[key]) - set(before[key])
        assert not missing and not extra, f"{key}: missing {sorted(missing)}, extra {sorted(extra)}"


async def make_uplinks(ipr):
    """up0 (IPv4+IPv6, main's preferred default) and up1 (IPv4, worse default), veth pairs kept up."""
    for name, addrs, gws in (("up0", [(RLOC0, 24), (RLOC0_6, 64)], [("192.0.2.1", 100), ("2001:db8:1::1", 100)]),
                             ("up1", [(RLOC1, 24)], [("198.51.100.1", 200)])):
        await ipr.link("add", ifname=name, kind="veth", peer={"ifname": name + "p"})
        index, peer = [(await ipr.link_lookup(ifname=n))[0] for n in (name, name + "p")]
        for i in (peer, index):
            await ipr.link("set", index=i, state="up")
        for address, plen in addrs:
            await ipr.addr("add", index=index, address=address, prefixlen=plen, flags=0x02)   # nodad
        for gw, metric in gws:
            family = socket.AF_INET if ":" not in gw else socket.AF_INET6
            await ipr.route("add", family=family, dst="0.0.0.0/0" if family == socket.AF_INET else "::/0",
                            gateway=gw, oif=index, priority=metric)


async def route_get(ipr, dst, src=None):
    kwargs = {"dst": dst, "flags": 0x1000}   # RTM_F_LOOKUP_TABLE: report the table that matched
    if src:
        kwargs["src"] = src
    (r,) = await ipr.route("get", **kwargs)
    return r.get_attr("RTA_OIF"), r.get_attr("RTA_GATEWAY"), r.get_attr("RTA_TABLE"), r.get_attr("RTA_PREFSRC")


def source_for(ns, family, dst):
    s = pr_netns.create_socket(ns, family, socket.SOCK_DGRAM, flags=0)
    try:
        s.connect((dst, 9))          # UDP connect: a route lookup, no packet sent
        return s.getsockname()[0]
    finally:
        s.close()


def test_eid_device_routing_and_restore(ns):
    async def main():
        async with AsyncIPRoute(netns=ns, flags=0) as ipr:
            await make_uplinks(ipr)
            up0, up1 = [(await ipr.link_lookup(ifname=n))[0] for n in ("up0", "up1")]
            before = await snapshot(ipr)
            assert ("2", "254", "None", "0", str(up0), "192.0.2.1", "None", "100", "1", "4") in before["routes"]
            # Without the mobile node, applications would use an RLOC.
            assert source_for(ns, socket.AF_INET, REMOTE4) == RLOC0

            async with MobileNode([EID4, EID6], netns=ns) as mn:
                (lmn0,) = await ipr.link_lookup(ifname="lmn0")
                assert mn.ifindex == lmn0 and await ipr.link_lookup(ifname="lmn0p")
                (link,) = await ipr.link("get", index=lmn0)
                assert link["flags"] & IFF_NOARP and link.get_attr("IFLA_OPERSTATE") == "UP"
                addrs = {(m.get_attr("IFA_ADDRESS"), m["prefixlen"]) async for m in await ipr.addr("dump", index=lmn0)}
                assert addrs == {(EID4, 32), (EID6, 128)}       # and no link-local

                t0 = (await mn.add_uplink("up0", ipaddress.ip_address(RLOC0))).table
                assert (await mn.add_uplink("up0", RLOC0_6)).table == t0
                t1 = (await mn.add_uplink("up1", RLOC1)).table
                assert len({DEFAULT_EID_TABLE, t0, t1}) == 3

                during = await snapshot(ipr)
                main_routes = lambda snap: [r for r in snap["routes"] if r[1] == "254"]
                assert main_routes(during) == main_routes(before)        # main is never touched
                ours = {r[:5] for r in during["rules"] if r[5] == str(RTPROT_LISPCTL)}
                assert ours == {
                    ("2", "100", str(t0), RLOC0, "32"), ("10", "100", str(t0), RLOC0_6, "128"),
                    ("2", "100", str(t1), RLOC1, "32"),
                    ("2", "110", str(DEFAULT_EID_TABLE), "None", "0"),
                    ("10", "110", str(DEFAULT_EID_TABLE), "None", "0")}

                # Unbound sockets get the EID as source, through lmn0.
                assert source_for(ns, socket.AF_INET, REMOTE4) == EID4
                assert source_for(ns, socket.AF_INET6, REMOTE6) == EID6
                assert await route_get(ipr, REMOTE4) == (lmn0, None, DEFAULT_EID_TABLE, EID4)
                # Traffic sourced from an RLOC leaves by that RLOC's own interface.
                assert await route_get(ipr, REMOTE4, RLOC0) == (up0, "192.0.2.1", t0, None)
                assert await route_get(ipr, REMOTE4, RLOC1) == (up1, "198.51.100.1", t1, None)
                assert (await route_get(ipr, REMOTE6, RLOC0_6))[:3] == (up0, "2001:db8:1::1", t0)

                # up1 goes away: its RLOC no longer has a way out but the EID's.
                await mn.remove_uplink("up1")
                assert (await route_get(ipr, REMOTE4, RLOC1))[0] == lmn0
                # Handover on up0 with an explicit gateway: the table is re-synced, not duplicated.
                await mn.add_uplink("up0", RLOC0, gateway="192.0.2.254")
                assert await route_get(ipr, REMOTE4, RLOC0) == (up0, "192.0.2.254", t0, None)
                assert sum(1 for r in (await snapshot(ipr))["rules"] if r[3] == RLOC0) == 1

            assert_same(before, await snapshot(ipr))
            assert source_for(ns, socket.AF_INET, REMOTE4) == RLOC0
    run(main())


def test_restore_after_kernel_removed_things_and_on_exception(ns):
    async def main():
        async with AsyncIPRoute(netns=ns, flags=0) as ipr:
            await make_uplinks(ipr)
            (up0,) = await ipr.link_lookup(ifname="up0")
            before = await snapshot(ipr)
            with pytest.raises(RuntimeError, match="boom"):
                async with MobileNode([EID4], netns=ns, ifname="eid0") as mn:
                    await mn.add_uplink("up0", RLOC0)
                    # The link going down makes the kernel flush up0's routes from our table.
                    await ipr.link("set", index=up0, state="down")
                    raise RuntimeError("boom")
            await ipr.link("set", index=up0, state="up")
            after = await snapshot(ipr)
            # Everything but the main-table routes IPv4 flushed with the link is back as it was.
            assert after["rules"] == before["rules"] and after["links"] == before["links"]
            assert not [r for r in after["routes"] if r[9] == str(RTPROT_LISPCTL)]
            await mn.restore()      # idempotent
    run(main())


def test_refuses_existing_device(ns):
    async def main():
        async with AsyncIPRoute(netns=ns, flags=0) as ipr:
            await ipr.link("add", ifname="lmn0", kind="veth", peer={"ifname": "other0"})
            before = await snapshot(ipr)
            with pytest.raises(NetError) as err:
                async with MobileNode([EID4], netns=ns):
                    pass
            assert err.value.errno == 17
            assert_same(before, await snapshot(ipr))       # the foreign lmn0 is untouched
    run(main())


def test_eid_routes(ns):
    async def main():
        async with AsyncIPRoute(netns=ns, flags=0) as ipr:
            await make_uplinks(ipr)
            up0, up1 = [(await ipr.link_lookup(ifname=n))[0] for n in ("up0", "up1")]
            before = await snapshot(ipr)
            async with EidRoutes(ns) as routes:
                await routes.add("10.2.0.0/16", "up0")
                await routes.add("fd00:2::/48", "up0", gateway="2001:db8:1::1")
                await routes.add("10.3.0.0/16", "up1", table=100, metric=10)
                assert (await route_get(ipr, "10.2.3.4"))[0] == up0
                assert (await route_get(ipr, "fd00:2::9"))[:2] == (up0, "2001:db8:1::1")
                # Re-adding the same prefix moves it.
                await routes.add("10.2.0.0/16", "up1")
                assert (await route_get(ipr, "10.2.3.4"))[0] == up1
                assert await routes.remove("10.2.0.0/16")
                assert not await routes.remove("10.2.0.0/16")
                assert (await route_get(ipr, "10.2.3.4"))[0] == up0        # main's default again
                # A route we did not make is neither taken over nor deleted.
                await ipr.route("add", dst="10.9.0.0/16", oif=up1)
                with pytest.raises(NetError):
                    await routes.add("10.9.0.0/16", "up1")
            after = await snapshot(ipr)
            await ipr.route("del", dst="10.9.0.0/16", oif=up1)
            assert_same(before, await snapshot(ipr))
            assert any(r[2] == "10.9.0.0" for r in after["routes"]), after["routes"]
    run(main())
