"""The watcher against a real kernel, inside a namespace of our own."""
import asyncio
import ipaddress

from pyroute2 import AsyncIPRoute

from lispctl.mapping.types import Rloc
from lispctl.net.watch import (
    AddressAdded, AddressRemoved, GatewayChanged, InterfaceWatcher, LinkDown, LinkUp, LocatorSpec,
    local_locators,
)

from .conftest import run

ip = ipaddress.ip_address


async def until(watcher, wanted, timeout=5.0):
    """Collect events until `wanted` shows up; fail (not hang) if it does not."""
    seen = []

    async def collect():
        while wanted not in seen:
            seen.append(await watcher.next_event())
    try:
        await asyncio.wait_for(collect(), timeout)
    except asyncio.TimeoutError:
        raise AssertionError(f"no {wanted} within {timeout}s; saw {seen}") from None
    return seen


async def _links(ipr, *names):
    return [(await ipr.link_lookup(ifname=n))[0] for n in names]


def test_events_view_and_locators(ns):
    async def main():
        async with AsyncIPRoute(netns=ns, flags=0) as ipr:
            await ipr.link("add", ifname="up0", kind="veth", peer={"ifname": "up0p"})
            up0, up0p = await _links(ipr, "up0", "up0p")
            with InterfaceWatcher(ns) as w:
                assert w.view.index("up0") == up0 and not w.view.is_up("up0")
                await ipr.link("set", index=up0p, state="up")
                await ipr.link("set", index=up0, state="up")
                seen = await until(w, LinkUp("up0"))
                await ipr.addr("add", index=up0, address="192.0.2.10", prefixlen=24)
                seen += await until(w, AddressAdded("up0", ip("192.0.2.10"), 24))
                await ipr.addr("add", index=up0, address="2001:db8:1::10", prefixlen=64, flags=0x02)
                seen += await until(w, AddressAdded("up0", ip("2001:db8:1::10"), 64))
                await ipr.route("add", dst="0.0.0.0/0", gateway="192.0.2.1", oif=up0)
                seen += await until(w, GatewayChanged("up0", 4, ip("192.0.2.1")))
                assert w.view.gateway("up0", 4) == ip("192.0.2.1")

                specs = [LocatorSpec("up0", 4, 1, 50), LocatorSpec("up0", 6, 2, 100)]
                assert local_locators(w.view, specs) == [
                    Rloc(ip("192.0.2.10"), 1, 50, True), Rloc(ip("2001:db8:1::10"), 2, 100, True)]

                # Carrier loss (peer down) is a LinkDown too; the IPv4 address stays, unreachable.
                await ipr.link("set", index=up0p, state="down")
                seen += await until(w, LinkDown("up0"))
                assert local_locators(w.view, specs)[0] == Rloc(ip("192.0.2.10"), 1, 50, False)
                await ipr.link("set", index=up0p, state="up")
                seen += await until(w, LinkUp("up0"))

                await ipr.addr("del", index=up0, address="192.0.2.10", prefixlen=24)
                seen += await until(w, AddressRemoved("up0", ip("192.0.2.10"), 24))
                assert [r.address for r in local_locators(w.view, specs)] == [ip("2001:db8:1::10")]

                # Admin down: IPv6 addresses are removed by the kernel and must be reported.
                await ipr.link("set", index=up0, state="down")
                chunk = await until(w, AddressRemoved("up0", ip("2001:db8:1::10"), 64))
                if LinkDown("up0") not in chunk:
                    chunk += await until(w, LinkDown("up0"))
                seen += chunk
                assert not w.view.is_up("up0")
                assert local_locators(w.view, specs) == []

                # Kernel-made link-local addresses never surface as locators or events.
                added = [e for e in seen if isinstance(e, AddressAdded)]
                assert all(not e.address.is_link_local for e in added), added
                assert all(not a.address.is_link_local
                           for link in w.view.links.values() for a in link.addresses)
                assert w.resyncs == 0
    run(main())


def test_tentative_address_reported_only_after_dad(ns):
    async def main():
        async with AsyncIPRoute(netns=ns, flags=0) as ipr:
            await ipr.link("add", ifname="up0", kind="veth", peer={"ifname": "up0p"})
            up0, up0p = await _links(ipr, "up0", "up0p")
            await ipr.link("set", index=up0, state="up")      # peer down: no carrier, DAD cannot run
            with InterfaceWatcher(ns, track_gateways=False) as w:
                await ipr.addr("add", index=up0, address="2001:db8:2::5", prefixlen=64)
                # The notification is queued before the request is acked, so this drain has it.
                assert not [e for e in w.drain() if isinstance(e, AddressAdded)]
                assert w.view.addresses("up0") == []
                await ipr.link("set", index=up0p, state="up")
                await until(w, AddressAdded("up0", ip("2001:db8:2::5"), 64), timeout=10)
    run(main())


def test_async_iteration_and_fileno(ns):
    async def main():
        async with AsyncIPRoute(netns=ns, flags=0) as ipr:
            await ipr.link("add", ifname="up0", kind="veth", peer={"ifname": "up0p"})
            (up0,) = await _links(ipr, "up0")
            with InterfaceWatcher(ns) as w:
                assert isinstance(w.fileno(), int)
                await ipr.addr("add", index=up0, address="198.51.100.9", prefixlen=24)

                async def first_added():
                    async for ev in w:
                        if isinstance(ev, AddressAdded):
                            return ev
                assert await asyncio.wait_for(first_added(), 5) == AddressAdded(
                    "up0", ip("198.51.100.9"), 24)
                # The abandoned iterator left no reader behind.
                loop = asyncio.get_running_loop()
                assert not loop.remove_reader(w.fileno())
    run(main())


def test_overflow_resyncs_and_reports_the_difference(ns):
    async def main():
        async with AsyncIPRoute(netns=ns, flags=0) as ipr:
            await ipr.link("add", ifname="up0", kind="veth", peer={"ifname": "up0p"})
            (up0,) = await _links(ipr, "up0")
            # A tiny receive buffer, never drained while 200 addresses come and half go.
            with InterfaceWatcher(ns, track_gateways=False, rcvbuf=1) as w:
                for i in range(200):
                    await ipr.addr("add", index=up0, address=f"10.77.{i}.1", prefixlen=24)
                for i in range(0, 200, 2):
                    await ipr.addr("del", index=up0, address=f"10.77.{i}.1", prefixlen=24)
                events = w.drain()
                assert w.resyncs >= 1
                expected = {ip(f"10.77.{i}.1") for i in range(1, 200, 2)}
                assert {a.address for a in w.view.addresses("up0")} == expected
                # The events tell the same story as the view: replaying them gives the final set.
                present = set()
                for e in events:
                    if isinstance(e, AddressAdded):
                        present.add(e.address)
                    elif isinstance(e, AddressRemoved):
                        present.discard(e.address)
                assert present == expected
    run(main())
