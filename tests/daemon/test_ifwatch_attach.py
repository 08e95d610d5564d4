"""LocatorWatch attaches the data plane to RLOC interfaces that did not exist
at start or were re-created, before the ETR hears of their addresses; an
interface that goes is forgotten (and its locators go). No root: a fake
interface view and data plane."""
from __future__ import annotations

import asyncio
import ipaddress
from collections import Counter

from lispctl.config import loads
from lispctl.daemon.ifwatch import LocatorWatch
from lispctl.net.watch import AddressAdded, AddressRemoved, IfAddress, Link, LinkDown, LinkUp, NetView
from lispctl.roles import build_roles

A = ipaddress.ip_address
CFG = """\
instance = "w"
roles = ["xtr"]
[interfaces]
eid-facing = ["eid0"]
rloc-facing = ["wan0", "wan1"]
[[database]]
eid-prefix = "10.1.0.0/24"
[[database.locator]]
interface = "wan0"
[[database.locator]]
interface = "wan1"
[[map-server]]
address = "192.0.2.10"
key = "k"
[[map-resolver]]
address = "192.0.2.10"
"""


class FakeDatapath:
    def __init__(self, log):
        self.log, self.rlocs, self.modes = log, [], {}

    def attach_rloc_interface(self, name, mode="tc", complete_checksums=None):
        self.modes[name] = mode
        self.log.append(("attach", name))

    def local_rlocs(self):
        return list(self.rlocs)

    def add_local_rloc(self, a):
        self.rlocs.append(a)
        self.log.append(("rloc+", str(a)))

    def remove_local_rloc(self, a):
        self.rlocs.remove(a)
        self.log.append(("rloc-", str(a)))


class FakeRuntime:
    def __init__(self):
        self.counters = Counter()

    def now(self):
        return 10.0

    def _guarded(self, name, what, fn):
        fn()

    def _reschedule(self):
        pass


class FakeWatcher:
    def __init__(self):
        self.view = NetView({})
        self.queued = []

    def set(self, links, events):
        self.view = NetView({l.index: l for l in links})
        self.queued = events

    def drain(self):
        out, self.queued = self.queued, []
        return out

    def fileno(self):
        return -1

    def close(self):
        pass


class Device:
    def __init__(self, roles, dp, info):
        self.roles, self.datapath, self.info = roles, dp, info


def link(index, name, *addrs):
    return Link(index, name, admin_up=True, running=True, carrier=True,
                addresses=frozenset(IfAddress(A(a), 24) for a in addrs))


def make():
    log = []
    roles = build_roles(loads(CFG), interface_addresses={"wan0": [A("198.51.100.1")], "wan1": []})
    etr = dict(roles)["etr"]
    etr.start(0.0)
    orig = etr.set_interface_addresses

    def spy(name, addrs, now):
        log.append(("etr", name, tuple(str(a) for a in addrs)))
        return orig(name, addrs, now)
    etr.set_interface_addresses = spy
    dp = FakeDatapath(log)
    dp.rlocs = [A("198.51.100.1")]
    # build.py attached wan0 (ifindex 2); wan1 did not exist
    w = LocatorWatch(FakeRuntime(), Device(roles, dp, {"rloc_ifindex": {"wan0": 2}, "rloc_mode": "xdp"}),
                     ["wan0", "wan1"])
    w.watcher = FakeWatcher()
    w.watcher.set([link(2, "wan0", "198.51.100.1")], [])
    w.known = {"wan0": [A("198.51.100.1")], "wan1": []}
    return w, log, etr


async def settle(w):
    w._ready()
    for _ in range(50):
        if w._worker is None or w._worker.done():
            break
        await asyncio.sleep(0.01)


def test_interface_appearing_is_attached_before_the_etr_hears_of_it():
    async def go():
        w, log, etr = make()
        assert w.rloc_names == ["wan0", "wan1"] and not w._attach_needed()
        w.watcher.set([link(2, "wan0", "198.51.100.1"), link(5, "wan1", "203.0.113.7")],
                      [LinkUp("wan1"), AddressAdded("wan1", A("203.0.113.7"), 24)])
        await settle(w)
        assert log.index(("attach", "wan1")) < log.index(("etr", "wan1", ("203.0.113.7",)))
        assert ("rloc+", "203.0.113.7") in log
        assert w.attached == {"wan0": 2, "wan1": 5}
        assert w.device.datapath.modes["wan1"] == "xdp"     # the configured interfaces.rloc-mode
        assert w.rt.counters["rloc_interfaces_attached"] == 1
        assert A("203.0.113.7") in etr.site.rlocs()

        # gone: forgotten, its locator removed; no attach attempted
        log.clear()
        w.watcher.set([link(2, "wan0", "198.51.100.1")],
                      [AddressRemoved("wan1", A("203.0.113.7"), 24), LinkDown("wan1")])
        await settle(w)
        assert "wan1" not in w.attached and ("attach", "wan1") not in log
        assert ("rloc-", "203.0.113.7") in log and A("203.0.113.7") not in etr.site.rlocs()

        # re-created with a new ifindex: attached again
        log.clear()
        w.watcher.set([link(2, "wan0", "198.51.100.1"), link(9, "wan1", "203.0.113.7")],
                      [LinkUp("wan1"), AddressAdded("wan1", A("203.0.113.7"), 24)])
        await settle(w)
        assert log[0] == ("attach", "wan1") and w.attached["wan1"] == 9
    asyncio.run(go())


def test_failed_attach_is_counted_and_retried_at_the_next_event():
    async def go():
        w, log, _ = make()
        fails = [True]

        def attach(name, mode="tc", complete_checksums=None):
            if fails.pop(0) if fails else False:
                raise RuntimeError("device vanished")
            log.append(("attach", name))
        w.device.datapath.attach_rloc_interface = attach
        w.watcher.set([link(2, "wan0", "198.51.100.1"), link(5, "wan1")], [LinkUp("wan1")])
        await settle(w)
        assert w.rt.counters["attach_errors"] == 1 and "wan1" not in w.attached
        w.watcher.set([link(2, "wan0", "198.51.100.1"), link(5, "wan1", "203.0.113.7")],
                      [AddressAdded("wan1", A("203.0.113.7"), 24)])
        await settle(w)
        assert w.attached["wan1"] == 5 and ("attach", "wan1") in log
    asyncio.run(go())
