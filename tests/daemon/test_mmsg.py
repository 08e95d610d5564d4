"""Control sockets read batches with recvmmsg and send the replies of a batch
with one sendmmsg (daemon/mmsg.py): every datagram of a batch reaches the
roles intact with its source and destination, every reply leaves in order,
and a reply the kernel refuses is counted without losing the others."""
from __future__ import annotations

import asyncio
import ipaddress
import socket

import pytest

from lispctl.daemon import mmsg
from lispctl.roles.base import Endpoint, Send

from .fakes import run_in_runtime
from .test_dispatch_logs import _until


class Replier:
    """Answers each datagram "N ..." with its bytes reversed; "big N" with N
    bytes; "refused" with one datagram to the broadcast address (EACCES
    without SO_BROADCAST) and one to the sender."""
    message_types = None

    def __init__(self) -> None:
        self.seen: list[tuple[bytes, Endpoint, Endpoint]] = []

    def handle(self, data, src, dst, now):
        self.seen.append((data, src, dst))
        if data.startswith(b"big "):
            return [Send(b"B" * int(data[4:]), src)]
        if data == b"refused":
            return [Send(b"lost", Endpoint(ipaddress.ip_address("255.255.255.255"), 9)), Send(b"kept", src)]
        return [Send(data[::-1], src)]

    def next_deadline(self):
        return None


def _run(body, binds):
    role = Replier()
    return role, run_in_runtime(body, [("r", role)], binds=list(binds))


def _drain(s: socket.socket, n: int) -> list[bytes]:
    s.settimeout(3.0)
    return [s.recv(70000) for _ in range(n)]


def test_a_batch_reaches_the_roles_with_source_and_destination_and_replies_leave_in_order():
    sent = [b"%d " % i + b"x" * (i % 7) for i in range(3 * mmsg.BATCH)] + [b"big 60000", b"big 5000", b"last"]

    async def body(rt):
        port = rt.sockets.port
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
            s.bind(("127.0.0.1", 0))
            for d in sent:          # queued before the loop runs: read in batches
                s.sendto(d, ("127.0.0.1", port))
            await _until(lambda: rt.counters["datagrams_rx"] == len(sent))
            await asyncio.sleep(0)
            got = await asyncio.get_running_loop().run_in_executor(None, _drain, s, len(sent))
            return s.getsockname(), got, rt.socket_counters()
    role, (me, got, counters) = _run(body, ("0.0.0.0",))
    assert [d for d, _, _ in role.seen] == sent
    assert {(str(src.addr), src.port) for _, src, _ in role.seen} == {me}
    assert {str(dst.addr) for _, _, dst in role.seen} == {"127.0.0.1"}     # IP_PKTINFO, wildcard socket
    assert got == [d[::-1] for d in sent[:-3]] + [b"B" * 60000, b"B" * 5000, b"tsal"]
    assert counters["rx"] == counters["tx"] == len(sent) and counters["send_errors"] == 0


def test_ipv6_batch_with_pktinfo():
    try:
        probe = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        pytest.skip("no IPv6 loopback")

    async def body(rt):
        port = rt.sockets.port
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
            for i in range(100):
                s.sendto(b"%d" % i, ("::1", port))
            await _until(lambda: rt.counters["datagrams_rx"] == 100)
            got = await asyncio.get_running_loop().run_in_executor(None, _drain, s, 100)
            return s.getsockname()[:2], got
    role, (me, got) = _run(body, ("::",))
    assert {(str(src.addr), src.port) for _, src, _ in role.seen} == {me}
    assert {str(dst.addr) for _, _, dst in role.seen} == {"::1"}
    assert got == [(b"%d" % i)[::-1] for i in range(100)]


def test_a_refused_reply_of_a_batch_is_counted_and_the_others_are_sent():
    async def body(rt):
        port = rt.sockets.port
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(10):
                s.sendto(b"refused", ("127.0.0.1", port))
            await _until(lambda: rt.counters["datagrams_rx"] == 10)
            got = await asyncio.get_running_loop().run_in_executor(None, _drain, s, 10)
            return got, dict(rt.counters), rt.socket_counters()
    _, (got, counters, socks) = _run(body, ("127.0.0.1",))
    assert got == [b"kept"] * 10
    assert counters["send_errors"] == 10 and socks["send_errors"] == 10 and socks["tx"] == 10


def test_before_replies_runs_before_any_reply_of_a_batch_leaves(monkeypatch):
    """An [ms] worker tells the main process what a batch changed before the
    batch's Map-Notifies leave (daemon/msworkers.py): also when a full batch
    of replies fills the send queue and leaves before the batch ends."""
    events: list[str] = []
    flush = mmsg.Sender.flush

    def recording_flush(self, fd, failed):
        if self.count:
            events.append("replies")
        return flush(self, fd, failed)
    monkeypatch.setattr(mmsg.Sender, "flush", recording_flush)
    recv = mmsg.Receiver.recv

    def recording_recv(self, fd):
        n = recv(self, fd)
        if n:
            events.append("batch")
        return n
    monkeypatch.setattr(mmsg.Receiver, "recv", recording_recv)
    sent = [b"%d" % i for i in range(3 * mmsg.BATCH)]

    async def body(rt):
        rt.sockets.before_replies = lambda: events.append("told")
        port = rt.sockets.port
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
            s.bind(("127.0.0.1", 0))
            for d in sent:          # queued before the loop runs: full batches
                s.sendto(d, ("127.0.0.1", port))
            await _until(lambda: rt.counters["datagrams_rx"] == len(sent))
            return await asyncio.get_running_loop().run_in_executor(None, _drain, s, len(sent))
    _, got = _run(body, ("127.0.0.1",))
    assert got == [d[::-1] for d in sent]
    assert events.count("replies") >= 3
    # in each batch, the main process is told before the first of its replies leaves
    told = False
    for e in events:
        if e == "batch":
            told = False
        elif e == "told":
            told = True
        else:
            assert told, events
