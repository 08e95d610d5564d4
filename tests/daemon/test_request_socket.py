"""Map-Requests have their own socket (a reuseport group steered by message
type), so a request flood cannot push Map-Registers out of the kernel queue,
and registers are handled before requests (issue 9.2)."""
from __future__ import annotations

import socket


from .fakes import FakeRole, run_in_runtime
from .test_dispatch_logs import _until


class Both(FakeRole):
    message_types = frozenset({1, 3, 8})


def _run(body, binds=("127.0.0.1",)):
    role = Both()
    return role, run_in_runtime(body, [("msmr", role)], binds=list(binds))


def test_each_control_address_gets_a_request_socket_and_both_reach_the_roles():
    async def body(rt):
        assert len(rt.sockets.request_sockets) == 8 and len(rt.sockets.sockets) == 1
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for d in (b"\x30reg", b"\x80ecm", b"\x10req"):
                s.sendto(d, ("127.0.0.1", rt.sockets.port))
        await _until(lambda: rt.counters["datagrams_rx"] == 3)
        return rt.socket_counters()
    role, counters = _run(body)
    assert sorted(d for d, _, _ in role.seen) == [b"\x10req", b"\x30reg", b"\x80ecm"]
    assert counters["request_sockets"] == 8


def registers(role):
    """Map-Registers the role was handed."""
    return sum(1 for d, _, _ in role.seen if d[0] == 0x30)


def test_a_request_flood_that_overflows_its_queue_loses_no_register_and_registers_go_first():
    async def body(rt):
        to = ("127.0.0.1", rt.sockets.port)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            # the loop cannot read while this runs: the request queue overflows
            for i in range(5000):
                s.sendto(b"\x80flood %d" % i, to)
            for i in range(20):
                s.sendto(b"\x30register %d" % i, to)
        await _until(lambda: registers(rt.roles[0][1]) == 20)
        return rt.socket_counters()
    role, counters = _run(body)
    types = [d[0] for d, _, _ in role.seen]
    assert types.count(0x30) == 20
    assert counters["queue_drops_requests"] > 0 and counters["queue_drops_control"] == 0
    assert types[:20] == [0x30] * 20 and types[20] == 0x80      # registers first


def test_a_flood_from_one_source_fills_only_its_own_request_queue():
    import ipaddress
    from lispctl.daemon.udp import request_queue_of
    flooder = "127.0.0.2"
    legit = next(f"127.0.0.{i}" for i in range(3, 50)
                 if request_queue_of(ipaddress.ip_address(f"127.0.0.{i}"))
                 != request_queue_of(ipaddress.ip_address(flooder)))

    def legit_seen(role):
        return sum(1 for d, src, _ in role.seen if str(src.addr) == legit)

    async def body(rt):
        to = ("127.0.0.1", rt.sockets.port)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as f, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as g:
            f.bind((flooder, 0))
            g.bind((legit, 0))
            for i in range(5000):               # the loop cannot read meanwhile
                f.sendto(b"\x80flood %d" % i, to)
            for i in range(20):
                g.sendto(b"\x80legit %d" % i, to)
        await _until(lambda: legit_seen(rt.roles[0][1]) == 20)
        return rt.socket_counters()
    role, counters = _run(body)
    assert legit_seen(role) == 20
    assert counters["queue_drops_requests"] > 0


def test_ipv6_requests_are_steered_too():
    import pytest
    from .test_runtime import _has_ipv6_loopback
    if not _has_ipv6_loopback():
        pytest.skip("no IPv6 loopback")

    async def body(rt):
        assert len(rt.sockets.request_sockets) == 8
        to = ("::1", rt.sockets.port)
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            for i in range(5000):               # overflows the request queue of ::1
                s.sendto(b"\x80flood %d" % i, to)
            for i in range(20):
                s.sendto(b"\x30register %d" % i, to)
        await _until(lambda: registers(rt.roles[0][1]) == 20)
        return rt.socket_counters()
    role, counters = _run(body, binds=("::1",))
    assert registers(role) == 20 and counters["queue_drops_requests"] > 0


def test_a_burst_of_registers_fits_the_control_sockets_receive_buffer():
    """1,000 Map-Register-sized datagrams while the loop cannot read: the
    default receive buffer (208 KiB, about 200 such datagrams) dropped most;
    the control socket's (udp.CONTROL_RCVBUF, raised as root) holds them."""
    import os
    from tests.conftest import unavailable
    if os.geteuid() != 0:
        unavailable("needs root (SO_RCVBUFFORCE beyond net.core.rmem_max)")
    payload = b"\x30" + bytes(99)            # an IPv4 Map-Register with one record is about 100 bytes

    async def body(rt):
        to = ("127.0.0.1", rt.sockets.port)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(1000):
                s.sendto(payload, to)
        await _until(lambda: registers(rt.roles[0][1]) == 1000)
        return rt.socket_counters()
    role, counters = _run(body)
    assert registers(role) == 1000 and counters["queue_drops_control"] == 0
