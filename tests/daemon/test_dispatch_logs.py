"""The runtime hands each datagram to the roles registered for its message
type (issue 9.2), and logs events a peer can repeat as per-kind summaries
above debug (issue 9.6)."""
from __future__ import annotations

import asyncio
import logging
import socket

from lispctl.daemon.logsummary import LogSummary
from lispctl.roles.base import Log

from .fakes import FakeRole, run_in_runtime


class Typed(FakeRole):
    def __init__(self, types):
        super().__init__()
        self.message_types = frozenset(types)


class Chatty(FakeRole):
    message_types = frozenset({1})

    def handle(self, data, src, dst, now):
        super().handle(data, src, dst, now)
        return [Log(f"answered {src.addr}", kind="answered", peer=src.addr)]


async def _blast(port: int, payloads, *, sources=("127.0.0.1",)) -> None:
    for src in sources:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((src, 0))
            for i, p in enumerate(payloads):
                s.sendto(p, ("127.0.0.1", port))
                if i % 20 == 19:
                    await asyncio.sleep(0.002)          # let the daemon read (one loop)


async def _until(cond, timeout=3.0):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        assert loop.time() < end, "condition not met in time"
        await asyncio.sleep(0.01)


def _run(roles, body):
    return run_in_runtime(body, roles, binds=["127.0.0.1"])


def test_each_type_reaches_only_the_roles_registered_for_it():
    reg, req, every = Typed({3, 5}), Typed({1, 8}), FakeRole()

    async def body(rt):
        await _blast(rt.sockets.port, [b"\x30register", b"\x80ecm", b"\x50ack", b"\xf0other"])
        await _until(lambda: rt.counters["datagrams_rx"] == 4)
        return dict(rt.counters)
    counters = _run([("reg", reg), ("req", req), ("every", every)], body)
    assert sorted(d for d, _, _ in reg.seen) == [b"\x30register", b"\x50ack"]
    assert [d for d, _, _ in req.seen] == [b"\x80ecm"]
    assert len(every.seen) == 4                 # no message_types: offered everything
    assert counters["unhandled"] == 0


def test_a_type_no_role_takes_is_counted_not_offered():
    req = Typed({1, 8})

    async def body(rt):
        await _blast(rt.sockets.port, [b"\x30x", b"", b"\x80y"])
        await _until(lambda: rt.counters["datagrams_rx"] == 3)
        return dict(rt.counters)
    counters = _run([("req", req)], body)
    assert [d for d, _, _ in req.seen] == [b"\x80y"]
    assert counters["unhandled"] == 1 and counters["malformed"] == 1


def test_repeated_events_are_summarised_per_kind_above_debug(caplog):
    role = Chatty()

    async def body(rt):
        rt.logsum.window_s = 0.3
        await _blast(rt.sockets.port, [b"\x10q"] * 100, sources=("127.0.0.1", "127.0.0.2"))
        await _until(lambda: rt.counters["datagrams_rx"] == 200)
        await _until(lambda: any("more in the last" in r.getMessage() for r in caplog.records))
    with caplog.at_level(logging.INFO, logger="lispctl"):
        _run([("mr", role)], body)
    lines = [r.getMessage() for r in caplog.records if r.name == "lispctl.proto"]
    assert len(lines) == 2, lines
    assert lines[0].startswith("mr: answered 127.0.0.") and "summarised every 0.3 s" in lines[0]
    assert lines[1].startswith("mr: answered: 199 more in the last 0.3 s, from 127.0.0.")
    assert "(100)" in lines[1] and "(99)" in lines[1]


def test_malformed_datagrams_are_summarised_too(caplog):
    role = Typed({1})
    role.handle = lambda *a: (_ for _ in ()).throw(__import__("lispctl.wire").wire.MalformedMessage("junk", 0))

    async def body(rt):
        rt.logsum.window_s = 0.3
        await _blast(rt.sockets.port, [b"\x10junk"] * 100)
        await _until(lambda: rt.counters["malformed"] == 100)
        await _until(lambda: any("more in the last" in r.getMessage() for r in caplog.records))
    with caplog.at_level(logging.INFO, logger="lispctl"):
        _run([("ms", role)], body)
    lines = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
    assert len(lines) == 2 and lines[1] == "ms: malformed: 99 more in the last 0.3 s, from 127.0.0.1 (99)"


def test_every_event_is_logged_at_debug(caplog):
    role = Chatty()

    async def body(rt):
        await _blast(rt.sockets.port, [b"\x10q"] * 20)
        await _until(lambda: rt.counters["datagrams_rx"] == 20)
    with caplog.at_level(logging.DEBUG, logger="lispctl"):
        _run([("mr", role)], body)
    assert len([r for r in caplog.records if r.getMessage() == "mr: answered 127.0.0.1"]) == 20


def test_log_summary_windows_and_bounded_peers():
    ls = LogSummary(window_s=10.0)
    assert ls.offer("ms", "k", "a", "first", 0.0) == "ms: first (more k events summarised every 10 s)"
    for i in range(1000):
        assert ls.offer("ms", "k", f"p{i % 100}", "x", 1.0) is None
    assert ls.due() == 10.0 and ls.flush(9.9) == []
    (line,) = ls.flush(10.0)
    assert line.startswith("ms: k: 1000 more in the last 10 s, from ") and line.count("(10)") == 5
    assert line.endswith("others (950)")
    assert ls.due() is None
    assert ls.offer("ms", "k", "a", "again", 11.0) is not None      # a new window starts in full
