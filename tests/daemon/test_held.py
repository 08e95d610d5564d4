"""Held first packets leave encapsulated toward the locator, or expire
(daemon/held.py), with real sockets on loopback."""
from __future__ import annotations

import asyncio
import ipaddress
import socket
import time

from lispctl.daemon.held import HeldPackets
from lispctl.mapping.types import EidPrefix, MapAction, Rloc
from lispctl.roles.base import MissEvent
from lispctl.roles.holdq import HoldQueue
from lispctl.wire.data import decode_data_header

ip = ipaddress.ip_address
E = EidPrefix.parse


def _pkt(dst: str, tag: bytes) -> bytes:
    return bytes([0x45, 0, 0, 20 + len(tag), 0, 0, 0, 0, 64, 17, 0, 0]) + ip("10.1.0.10").packed \
        + ip(dst).packed + tag


def _miss(dst: str, tag: bytes, iid: int = 0) -> MissEvent:
    return MissEvent(EidPrefix(iid, ipaddress.ip_network(f"{dst}/32")), ip("10.1.0.10"), _pkt(dst, tag))


async def _run_send() -> None:
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", 0))
        rx.setblocking(False)
        port = rx.getsockname()[1]
        seen: list[float] = []
        held = HeldPackets(HoldQueue(max_age_s=5.0), lambda: [ip("127.0.0.1")], time.monotonic, loop,
                           data_port=port)
        held.observe = seen.append
        held.on_miss(_miss("10.2.0.1", b"one", iid=7))
        held.on_miss(_miss("10.2.0.1", b"two", iid=7))
        held.on_miss(_miss("10.3.0.1", b"other", iid=7))
        held.on_miss(MissEvent(E("10.4.0.1/32"), ip("10.1.0.10")))       # carried nothing
        assert len(held.queue) == 3
        held.on_install(E("10.2.0.0/16", 7), (Rloc(ip("127.0.0.1")),), MapAction.NO_ACTION)
        got = [await asyncio.wait_for(loop.sock_recvfrom(rx, 2048), 2.0) for _ in range(2)]
        for (data, src), tag in zip(got, (b"one", b"two")):
            h = decode_data_header(data[:8])
            assert h.nonce_present and h.instance_id == 7 and h.lsb == 1
            assert data[8:] == _pkt("10.2.0.1", tag) and src[0] == "127.0.0.1"
        assert len(seen) == 2 and all(0 <= s < 1 for s in seen)
        # a negative mapping discards; nothing else is sent
        held.on_install(E("10.3.0.0/16", 7), (), MapAction.DROP)
        assert len(held.queue) == 0 and held.counters()["held_discarded_negative"] == 1
        assert held.counters()["held_sent"] == 2
        held.close()


def test_held_packets_are_sent_encapsulated_once_installed():
    asyncio.run(_run_send())


async def _run_expiry() -> None:
    held = HeldPackets(HoldQueue(max_age_s=0.2), lambda: [], time.monotonic, asyncio.get_running_loop())
    for i in range(5):
        held.on_miss(_miss(f"10.2.0.{i + 1}", b"x"))
    assert len(held.queue) == 5
    deadline = time.monotonic() + 3.0
    while len(held.queue) and time.monotonic() < deadline:    # the timer frees them, unasked
        await asyncio.sleep(0.05)
    assert len(held.queue) == 0 and held.counters()["held_expired"] == 5
    held.close()


def test_nothing_is_held_past_the_timeout_without_new_events():
    asyncio.run(_run_expiry())


async def _run_native(port: int, rx: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    held = HeldPackets(HoldQueue(), lambda: [], time.monotonic, loop)
    payload = b"held natively"
    udp = port.to_bytes(2, "big") * 2 + (8 + len(payload)).to_bytes(2, "big") + b"\0\0" + payload
    total = 20 + len(udp)
    pkt = bytes([0x45, 0]) + total.to_bytes(2, "big") + bytes([0, 0, 0, 0, 64, 17, 0, 0]) \
        + ip("127.0.0.1").packed + ip("127.0.0.1").packed + udp
    held.on_miss(MissEvent(E("127.0.0.1/32"), ip("127.0.0.1"), pkt))
    held.on_install(E("127.0.0.0/8"), (), MapAction.NATIVELY_FORWARD)   # a natively-forward answer
    data, _ = await asyncio.wait_for(loop.sock_recvfrom(rx, 2048), 2.0)
    assert data == payload and held.counters()["held_sent_native"] == 1
    held.close()


def test_natively_forward_answer_sends_held_packets_natively():
    from tests.conftest import need_root
    need_root()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", 0))
        rx.setblocking(False)
        asyncio.run(_run_native(rx.getsockname()[1], rx))


def test_held_packets_to_a_nat_path_leave_through_the_data_port_sender():
    """A locator with a port (NAT traversal, docs/nat.md): the held packet
    goes through the daemon's port-4341 sender to that port, never from an
    ephemeral port (a second NAT binding); without a sender it is dropped
    and counted."""
    async def run():
        loop = asyncio.get_running_loop()
        held = HeldPackets(HoldQueue(max_age_s=5.0), lambda: [ip("127.0.0.1")], time.monotonic, loop)
        sent = []
        held.data_port_sender = lambda payload, dst, src: sent.append((dst, src, payload)) or True
        held.on_miss(_miss("10.2.0.1", b"one"))
        held.on_install(E("10.2.0.0/16"), (Rloc(ip("127.0.0.1"), port=4341),), MapAction.NO_ACTION)
        [(dst, src, payload)] = sent
        assert dst == ("127.0.0.1", 4341) and src == "127.0.0.1" and payload[8:] == _pkt("10.2.0.1", b"one")
        held.data_port_sender = None
        held.on_miss(_miss("10.2.0.2", b"two"))
        held.on_install(E("10.2.0.0/16"), (Rloc(ip("127.0.0.1"), port=40341),), MapAction.NO_ACTION)
        c = held.counters()
        assert c["held_sent"] == 1 and c["held_nat_path_dropped"] == 1
        held.close()
    asyncio.run(run())
