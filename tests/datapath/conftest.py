"""Fixtures for the data-plane tests.

The programs run through BPF_PROG_TEST_RUN, which uses the netns of the
calling process for FIB lookups. So the module enters a namespace of its own
(unique name with the pid) with two veth pairs and static neighbours: FIB
results, and so the output MAC addresses, are known exactly.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import need_root
from tests.datapath.interrupt import sigterm_runs_teardown  # noqa: F401

PID = os.getpid()
NS = f"ldp{PID}"
PIN_BASE = Path(f"/sys/fs/bpf/lispctl-test-{PID}")

RLOC_MAC = "02:00:00:00:01:01"      # our RLOC-side interface
EID_MAC = "02:00:00:00:02:01"       # our EID-side interface
PEER_MAC = {                        # static neighbours
    "192.0.2.2": "02:00:00:00:01:02", "192.0.2.3": "02:00:00:00:01:03", "192.0.2.4": "02:00:00:00:01:04",
    "192.0.2.5": "02:00:00:00:01:05",
    "2001:db8:1::2": "02:00:00:00:01:12", "2001:db8:1::3": "02:00:00:00:01:13",
    "10.1.0.10": "02:00:00:00:02:10", "fd00:1::10": "02:00:00:00:02:11",
}
HOST_MAC = "02:00:00:00:02:10"
VIA_ITR = "10.2.0.5"                # a remote EID our own packets reach through the ITR (fixture via_itr)


@dataclass
class Lab:
    ns: str
    rl_if: int
    eid_if: int


@pytest.fixture(scope="session")
def lab():
    need_root()
    from pyroute2 import IPRoute, netns

    netns.create(NS)
    try:
        netns.pushns(NS)
    except BaseException:
        netns.remove(NS)
        raise
    try:
        with IPRoute() as ipr:
            for name, peer, macaddr in (("rl0", "rl0p", RLOC_MAC), ("eid0", "eid0p", EID_MAC)):
                ipr.link("add", ifname=name, kind="veth", peer=peer)
                idx = ipr.link_lookup(ifname=name)[0]
                ipr.link("set", index=idx, address=macaddr)
                ipr.link("set", index=idx, state="up")
                ipr.link("set", index=ipr.link_lookup(ifname=peer)[0], state="up")
            rl = ipr.link_lookup(ifname="rl0")[0]
            ei = ipr.link_lookup(ifname="eid0")[0]
            lo = ipr.link_lookup(ifname="lo")[0]
            ipr.link("set", index=lo, state="up")
            ipr.addr("add", index=rl, address="192.0.2.1", prefixlen=24)
            ipr.addr("add", index=rl, address="2001:db8:1::1", prefixlen=64, flags=0x80)  # nodad
            ipr.addr("add", index=ei, address="10.1.0.254", prefixlen=24)
            ipr.addr("add", index=ei, address="fd00:1::fe", prefixlen=64, flags=0x80)
            for ip, m in PEER_MAC.items():
                dev = ei if ip.startswith(("10.", "fd00")) else rl
                ipr.neigh("add", dst=ip, lladdr=m, ifindex=dev, state=0x80)  # NUD_PERMANENT
        for path in ("/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"):
            Path(path).write_text("1\n")
        yield Lab(NS, rl, ei)
    finally:
        netns.popns()
        netns.remove(NS)


@pytest.fixture
def via_itr(lab):
    """VIA_ITR reached through eid0p, so packets this process sends to it
    enter eid0 (the ITR) as from a host of the site."""
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        peer = ipr.link_lookup(ifname="eid0p")[0]
        ipr.neigh("add", dst=VIA_ITR, lladdr=EID_MAC, ifindex=peer, state=0x80)
        ipr.route("add", dst=f"{VIA_ITR}/32", oif=peer, prefsrc="10.1.0.254")
    try:
        yield
    finally:
        with IPRoute() as ipr:
            ipr.route("del", dst=f"{VIA_ITR}/32", oif=peer)
            ipr.neigh("del", dst=VIA_ITR, lladdr=EID_MAC, ifindex=peer)


_counter = [0]


@pytest.fixture
def pin_root():
    """A fresh bpffs directory per test (pid in the name), removed after."""
    _counter[0] += 1
    root = PIN_BASE / str(_counter[0])
    root.mkdir(parents=True, exist_ok=True)
    yield root
    shutil.rmtree(root, ignore_errors=True)
    try:
        PIN_BASE.rmdir()
    except OSError:
        pass


@pytest.fixture(scope="session")
def loaded(lab):
    """One compiled data plane for the session (compiling takes seconds);
    `dp` empties it before each test."""
    from lispctl.datapath import Datapath

    root = PIN_BASE / "session"
    root.mkdir(parents=True, exist_ok=True)
    d = Datapath("t", pin_root=root)
    yield d
    d.close(unpin=True)
    shutil.rmtree(root, ignore_errors=True)
    try:
        PIN_BASE.rmdir()
    except OSError:
        pass


@pytest.fixture
def dp(loaded):
    """The loaded data plane, emptied, with local RLOCs and a local EID site."""
    import ipaddress

    from lispctl.mapping.types import EidPrefix

    d = loaded
    d.detach()
    d.reset()
    d.add_local_rloc(ipaddress.ip_address("192.0.2.1"))
    d.add_local_rloc(ipaddress.ip_address("2001:db8:1::1"))
    d.add_local_eid(EidPrefix.parse("10.1.0.0/16"))
    d.add_local_eid(EidPrefix.parse("fd00:1::/32"))
    d.poll_misses(0)
    yield d
    d.detach()


@pytest.fixture
def one_cpu():
    """PROG_TEST_RUN runs on the caller's CPU, and the per-CPU caches (flow
    cache, next hops, scratch) are per CPU: pin the test to one, so the
    packet after a change meets the warmed slot."""
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(old)})
    yield
    os.sched_setaffinity(0, old)
