"""vethpeer.check on real veth pairs: the peer found across namespaces, its
GRO and XDP state read there, and an answer of "cannot tell" (not a guess)
when the peer's namespace has neither a name nor a process."""
from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct

import pytest

from lispctl.datapath import vethpeer
from tests.conftest import need_root

pytestmark = pytest.mark.root

PID = os.getpid()
NS = f"lvp{PID}"
OURS, PEER = f"lvp{PID % 100000}", f"lvp{PID % 100000}p"


def _set_gro(ifname: str, on: bool) -> None:
    val = ctypes.create_string_buffer(struct.pack("=II", 0x2C, 1 if on else 0))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s.fileno(), 0x8946, struct.pack("16sP", ifname.encode(), ctypes.addressof(val)))


@pytest.fixture
def pair():
    """OURS here, PEER in namespace NS (up); both removed afterwards."""
    need_root()
    from pyroute2 import IPRoute, NetNS, netns
    netns.create(NS)
    try:
        with IPRoute() as ipr:
            ipr.link("add", ifname=OURS, kind="veth", peer={"ifname": PEER, "net_ns_fd": NS})
        with NetNS(NS) as n:
            n.link("set", index=n.link_lookup(ifname=PEER)[0], state="up")
        yield
    finally:
        with IPRoute() as ipr:
            idx = ipr.link_lookup(ifname=OURS)
            if idx:
                ipr.link("del", index=idx[0])
        if NS in netns.listnetns():
            netns.remove(NS)


def _in_ns(fn):
    from pyroute2 import netns
    netns.pushns(NS)
    try:
        return fn()
    finally:
        netns.popns()


def test_peer_in_a_named_namespace(pair):
    assert vethpeer.check("lo") is None                 # not a veth
    _in_ns(lambda: _set_gro(PEER, False))
    c = vethpeer.check(OURS)
    assert (c.peer, c.netns, c.accepts) == (PEER, f"/var/run/netns/{NS}", False)
    _in_ns(lambda: _set_gro(PEER, True))
    c = vethpeer.check(OURS)
    assert c.accepts is True and "GRO" in c.reason


def test_peer_namespace_without_name_or_process_is_unknown(pair):
    from pyroute2 import netns
    _in_ns(lambda: _set_gro(PEER, True))
    fd = os.open(f"/var/run/netns/{NS}", os.O_RDONLY)     # keeps it alive, nameless
    try:
        netns.remove(NS)
        c = vethpeer.check(OURS)
        assert c.accepts is None and "cannot be opened" in c.reason, c
    finally:
        os.close(fd)                                      # the namespace, and the pair, go
