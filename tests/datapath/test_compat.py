"""Kernel compatibility (bpf/lisp_compat.h, lispctl.datapath.probe).

The probe's answers, and decapsulation on both code paths: the one the
running kernel gets, and the one of kernels before 6.3 (no
BPF_F_ADJ_ROOM_DECAP_L3_*), compiled in explicitly so it is tested on any
kernel (tests/vm runs the whole subset on Debian's 6.1 as well).

The stack hands a packet passed up by the tc ETR to the IPv4 or IPv6 input
by skb->protocol, so these tests send real LISP frames into rl0 for the four
family combinations and require the inner UDP datagram at a socket bound to
the local EID address: an skb->protocol left at the outer family makes the
stack drop it, which BPF_PROG_TEST_RUN's output bytes would not show.
"""
from __future__ import annotations

import ipaddress
import os
import platform
import re
import shutil
import socket
import time

import pytest

from lispctl.mapping.types import EidPrefix
from tests.datapath import packets as P
from tests.datapath.conftest import PEER_MAC, PIN_BASE, RLOC_MAC

ip = ipaddress.ip_address

# outer source (peer RLOC), outer destination (our RLOC), inner source, inner destination (a local address)
CASES = {
    "4in4": ("192.0.2.2", "192.0.2.1", "192.0.2.9", "10.1.0.254"),
    "6in6": ("2001:db8:1::2", "2001:db8:1::1", "2001:db8:1::9", "fd00:1::fe"),
    "6in4": ("192.0.2.2", "192.0.2.1", "2001:db8:1::9", "fd00:1::fe"),
    "4in6": ("2001:db8:1::2", "2001:db8:1::1", "192.0.2.9", "10.1.0.254"),
}
PRE_6_3 = ("-DLISP_HAVE_DECAP_L3=0", "-DLISP_HAVE_DECAP_L4_UDP=0")


def _kernel() -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", platform.release())
    assert m, platform.release()
    return int(m.group(1)), int(m.group(2))


def test_probe_finds_decap_flags_from_6_3(root):
    from lispctl.datapath.probe import kernel_features
    f = kernel_features()
    assert f.decap_l3 == (_kernel() >= (6, 3))
    assert "-DLISP_HAVE_DECAP_L3=%d" % f.decap_l3 in f.cflags()


@pytest.fixture(scope="module")
def pre63(lab):
    """A second data plane compiled for kernels before 6.3."""
    from lispctl.datapath import Datapath
    root = PIN_BASE / f"pre63-{os.getpid()}"
    root.mkdir(parents=True, exist_ok=True)
    d = Datapath("t", pin_root=root, cflags=PRE_6_3)
    try:
        yield d
    finally:
        d.close(unpin=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["probed", "pre-6.3"])
def etr_dp(request, dp):
    if request.param == "probed":
        yield dp
        return
    d = request.getfixturevalue("pre63")
    d.reset()
    for a in ("192.0.2.1", "2001:db8:1::1"):
        d.add_local_rloc(ip(a))
    d.add_local_eid(EidPrefix.parse("10.1.0.0/16"))
    d.add_local_eid(EidPrefix.parse("fd00:1::/32"))
    try:
        yield d
    finally:
        d.detach()


def _recv(sock: socket.socket, timeout: float = 5.0) -> bytes | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            return sock.recv(2048)
        except TimeoutError:
            continue
    return None


@pytest.mark.parametrize("case", sorted(CASES))
def test_decapsulated_packet_reaches_local_socket(etr_dp, lab, case):
    osrc, odst, isrc, idst = CASES[case]
    etr_dp.attach_rloc_interface("rl0")
    fam = socket.AF_INET if ip(idst).version == 4 else socket.AF_INET6
    payload = f"lisp {case} {os.getpid()}".encode()
    with socket.socket(fam, socket.SOCK_DGRAM) as rx, \
            socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as tx:
        rx.bind((idst, 0))
        port = rx.getsockname()[1]
        inner = P.ip_packet(isrc, idst, payload, sport=4000, dport=port)
        et = P.ETH_IP if ip(odst).version == 4 else P.ETH_IP6
        frame = P.eth(P.mac(RLOC_MAC), P.mac(PEER_MAC[osrc]), et) + P.lisp_packet(osrc, odst, inner)
        tx.bind(("rl0p", 0))
        tx.send(frame)
        got = _recv(rx)
    c = etr_dp.counters()
    assert c.decapsulated == 1 and c.total_drops == 0, (c.decapsulated, c.drops)
    assert got == payload, "the decapsulated datagram did not reach the local socket"
