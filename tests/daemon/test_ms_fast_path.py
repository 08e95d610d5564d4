"""The daemon offers Map-Registers to the Map-Server's refresh fast path
first (issue 14.2): refreshes are answered from it, with the same Map-Notify
bytes handle() gives, and the daemon's and the role's counters stay exact."""
from __future__ import annotations

import asyncio
import logging
import ipaddress
import socket

from lispctl.config import loads
from lispctl.mapping.types import EidPrefix, Rloc
from lispctl.roles.base import Send
from lispctl.roles.ms import MapServerRole
from lispctl.wire import ALG_HMAC_SHA256, MapNotify, MapRegister, decode_control, eid_record, sign, verify

from .fakes import run_in_runtime

CONFIG = """
instance = "msfast"
roles = ["ms"]
[[site]]
name = "site-a"
keys = { 1 = "secret-a" }
[[site.eid-prefix]]
prefix = "10.1.0.0/16"
"""
ROUNDS = 5


def _register(nonce: int) -> bytes:
    rec = eid_record(EidPrefix.parse("10.1.0.0/16"), (Rloc(ipaddress.ip_address("127.0.0.1"), 1, 100),), ttl=1440)
    return sign(MapRegister(nonce, (rec,), key_id=1, alg_id=ALG_HMAC_SHA256, want_map_notify=True,
                            xtr_id=0xAB, site_id=0), "secret-a")


async def _exchange(rt, datagrams: list[bytes]) -> list[tuple[bytes, tuple]]:
    """Each datagram to the runtime's control socket from one loopback socket,
    one at a time, with the (reply, sender) it got."""
    loop = asyncio.get_running_loop()
    got = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setblocking(False)
        s.bind(("127.0.0.1", 0))
        for d in datagrams:
            s.sendto(d, ("127.0.0.1", rt.sockets.port))
            got.append(await asyncio.wait_for(loop.sock_recvfrom(s, 65535), 3.0))
    return got


def test_refreshes_are_answered_by_the_fast_path_with_exact_counters():
    role = MapServerRole(loads(CONFIG))
    fast_answers = []
    refresh = role.refresh

    def counting(data, src, now):
        reply = refresh(data, src, now)
        if reply is not None:
            fast_answers.append(reply)
        return reply
    role.refresh = counting                       # type: ignore[method-assign]

    async def body(rt):
        got = await _exchange(rt, [_register(nonce) for nonce in range(1, ROUNDS + 1)])
        return got, dict(rt.counters), rt.socket_counters()

    got, daemon, sockets = run_in_runtime(body, [("ms", role)], binds=["127.0.0.1"])
    for nonce, (data, peer) in enumerate(got, 1):
        notify = decode_control(data)
        assert isinstance(notify, MapNotify) and notify.nonce == nonce and notify.xtr_id == 0xAB
        assert verify(data, "secret-a") and peer[0] == "127.0.0.1"
    # the first registers (handle()); every refresh after it takes the fast path
    assert fast_answers == [data for data, _ in got[1:]]
    # what handle() answers for the same message, byte for byte
    slow = MapServerRole(loads(CONFIG))
    src = role.registered.get(EidPrefix.parse("10.1.0.0/16"))["000000000000000000000000000000ab"].source
    for nonce, (data, _) in enumerate(got, 1):
        (send,) = [e for e in slow.handle(_register(nonce), src, src, float(nonce)) if isinstance(e, Send)]
        assert send.payload == data and send.dst == src
    assert daemon["datagrams_rx"] == ROUNDS and daemon["sends"] == ROUNDS
    assert daemon["fast_path"] == ROUNDS - 1
    assert sockets["rx"] == ROUNDS and sockets["tx"] == ROUNDS
    assert {k: v for k, v in role.counters.items() if v} == {
        "map_register_rx": ROUNDS, "map_register_ok": ROUNDS, "map_notify_tx": ROUNDS}
    assert role.sites[0].registers == ROUNDS


def test_no_fast_path_when_another_role_takes_map_registers_or_datagrams_are_logged():
    from .fakes import FakeRole                  # offered every datagram (no message_types)

    async def body(rt):
        return rt.sockets.fast
    assert run_in_runtime(body, [("ms", MapServerRole(loads(CONFIG))), ("fake", FakeRole())],
                          binds=["127.0.0.1"]) is None
    role = MapServerRole(loads(CONFIG))
    assert run_in_runtime(body, [("ms", role)], binds=["127.0.0.1"]) == role.refresh

    log = logging.getLogger("lispctl.daemon")
    level = log.level
    log.setLevel(logging.DEBUG)
    try:
        assert run_in_runtime(body, [("ms", MapServerRole(loads(CONFIG)))], binds=["127.0.0.1"]) is None
    finally:
        log.setLevel(level)


class _Buggy:
    """A role whose fast path raises for b"boom": the datagram must still be
    handled (handle() answers "slow"), and the error counted."""
    message_types = frozenset({3})

    def fast_path(self):
        return 3, self.refresh

    def refresh(self, data, src, now):
        if data.endswith(b"boom"):
            raise RuntimeError("fast path bug")
        return b"fast"

    def handle(self, data, src, dst, now):
        return [Send(b"slow", src)]

    def next_deadline(self):
        return None


def test_an_error_in_the_fast_path_is_counted_and_the_datagram_handled():
    async def body(rt):
        got = await _exchange(rt, [b"\x30 ok", b"\x30 boom", b"\x30 ok"])
        return [data for data, _ in got], dict(rt.counters)
    got, counters = run_in_runtime(body, [("buggy", _Buggy())], binds=["127.0.0.1"])
    assert got == [b"fast", b"slow", b"fast"]
    assert counters["role_errors"] == 1 and counters["datagrams_rx"] == 3 and counters["sends"] == 3
