"""The event-loop core with a fake role, in-process, on loopback."""
from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import socket

import pytest

from lispctl.mapping.types import EidPrefix, MapAction
from lispctl.roles.base import MissEvent

from .fakes import FakeRole, run_in_runtime


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


async def _exchange(payload: bytes, to: tuple, *, bind: tuple | None = None,
                    expect: int = 1, timeout: float = 2.0) -> list[tuple[bytes, tuple]]:
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in to[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.setblocking(False)
        s.bind(bind or (("::1" if family == socket.AF_INET6 else "127.0.0.1"), 0))
        s.sendto(payload, to)
        out = []
        for _ in range(expect):
            out.append(await asyncio.wait_for(loop.sock_recvfrom(s, 65535), timeout))
        return out


async def _quiet(payload: bytes, to: tuple) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(payload, to)
    await asyncio.sleep(0.05)


def run(coro_fn, role=None, **kw):
    return run_in_runtime(coro_fn, [("fake", role or FakeRole())], **kw)


def test_datagram_reaches_role_with_src_and_dst_v4():
    async def body(rt):
        port = rt.sockets.port
        [(data, peer)] = await _exchange(b"echo hi", ("127.0.0.1", port))
        return port, json.loads(data), peer
    port, reply, peer = run(body, binds=["127.0.0.1"])
    assert reply["dst"] == ["127.0.0.1", port]
    assert reply["rest"] == "hi"
    assert peer == ("127.0.0.1", port)          # answered from the control port
    assert reply["src"][0] == "127.0.0.1" and reply["src"][1] != port


def test_wildcard_socket_reports_the_address_the_datagram_was_sent_to():
    # 127.0.0.2 is local (all of 127/8 is) but not the bound address: only
    # IP_PKTINFO can tell the role which local address was asked.
    async def body(rt):
        [(data, peer)] = await _exchange(b"echo", ("127.0.0.2", rt.sockets.port))
        return json.loads(data), peer
    reply, peer = run(body, binds=["0.0.0.0"])
    assert reply["dst"][0] == "127.0.0.2"
    assert peer[0] == "127.0.0.1"               # no source asked: kernel's choice


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback")
def test_datagram_reaches_role_v6_with_v6only_socket():
    async def body(rt):
        [(data, _)] = await _exchange(b"echo", ("::1", rt.sockets.port))
        v6 = [s for s in rt.sockets.sockets if s.family == socket.AF_INET6][0]
        return json.loads(data), v6.sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
    reply, v6only = run(body, binds=["127.0.0.1", "::"])
    assert reply["dst"][0] == "::1"
    assert v6only == 1


def test_send_from_chosen_source_address_and_port():
    async def body(rt):
        port = rt.sockets.port
        [(d1, p1)] = await _exchange(b"sendfrom 127.0.0.3 0", ("127.0.0.1", port))
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            free = probe.getsockname()[1]
        [(d2, p2)] = await _exchange(f"sendfrom 127.0.0.4 {free}".encode(), ("127.0.0.1", port))
        return port, free, (d1, p1), (d2, p2)
    port, free, (d1, p1), (d2, p2) = run(body, binds=["0.0.0.0"])
    assert d1 == b"from 127.0.0.3" and p1 == ("127.0.0.3", port)
    assert d2 == b"from 127.0.0.4" and p2 == ("127.0.0.4", free)


def test_timer_fires_tick_at_deadline():
    async def body(rt):
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        [(data, _)] = await _exchange(b"timer 0.2", ("127.0.0.1", rt.sockets.port))
        return data, loop.time() - t0
    data, elapsed = run(body, binds=["127.0.0.1"])
    assert data == b"tick 1"
    assert elapsed >= 0.2


def test_malformed_datagram_and_raising_role_do_not_stop_serving(caplog):
    async def body(rt):
        to = ("127.0.0.1", rt.sockets.port)
        await _quiet(b"bad", to)
        await _quiet(b"boom", to)
        [(data, _)] = await _exchange(b"echo still", to)
        return json.loads(data), dict(rt.counters)
    with caplog.at_level("DEBUG"):
        reply, counters = run(body, binds=["127.0.0.1"])
    assert reply["rest"] == "still"
    assert counters["malformed"] == 1
    assert counters["role_errors"] == 1
    assert counters["datagrams_rx"] == 3
    assert any("role bug" in (r.exc_text or "") or r.exc_info for r in caplog.records
               if r.levelname == "ERROR")


class FakeDatapath:
    def __init__(self):
        self.calls = []
        self.r, self.w = os.pipe()
        os.set_blocking(self.r, False)
        self.pending = []

    def set_mapping(self, eid, rlocs, action):
        self.calls.append(("set", eid, tuple(rlocs), action))

    def delete_mapping(self, eid):
        self.calls.append(("del", eid))

    def miss_fd(self):
        return self.r

    def push(self, ev):
        self.pending.append(ev)
        os.write(self.w, b"x")

    def poll_misses(self):
        try:
            os.read(self.r, 4096)
        except BlockingIOError:
            pass
        out, self.pending = self.pending, []
        return out


def test_mapping_effects_reach_datapath_and_api_view():
    dp = FakeDatapath()

    async def body(rt):
        to = ("127.0.0.1", rt.sockets.port)
        await _quiet(b"install 10.2.0.0/16", to)
        await _quiet(b"negative [7]10.9.0.0/16", to)
        view1 = rt.map_cache()
        await _quiet(b"remove 10.2.0.0/16", to)
        return view1, rt.map_cache()
    view1, view2 = run(body, datapath=dp, binds=["127.0.0.1"])
    eid = EidPrefix.parse("10.2.0.0/16")
    assert dp.calls[0][0:2] == ("set", eid) and dp.calls[0][3] == MapAction.NO_ACTION
    assert str(dp.calls[0][2][0].address) == "192.0.2.1"
    assert dp.calls[1][0] == "set" and dp.calls[1][3] == MapAction.DROP and dp.calls[1][2] == ()
    assert dp.calls[2] == ("del", eid)
    assert [e["eid"] for e in view1] == ["10.2.0.0/16", "[7]10.9.0.0/16"]
    assert view1[0]["rlocs"] == [{"address": "192.0.2.1", "priority": 1, "weight": 50, "reachable": True}]
    assert view1[1]["action"] == "drop" and 29 < view1[1]["expires_in_s"] <= 30
    assert [e["eid"] for e in view2] == ["[7]10.9.0.0/16"]
    os.close(dp.r), os.close(dp.w)


def test_miss_events_from_datapath_fd_reach_on_miss():
    dp = FakeDatapath()
    role = FakeRole()
    ev = MissEvent(EidPrefix.parse("10.5.5.5/32"), ipaddress.ip_address("10.1.0.9"))

    async def body(rt):
        dp.push(ev)
        dp.push(ev)
        for _ in range(100):
            if len(role.misses) >= 2:
                break
            await asyncio.sleep(0.01)
        return rt.counters["misses"]
    misses = run(body, role=role, datapath=dp, binds=["127.0.0.1"])
    assert role.misses == [ev, ev] and misses == 2
    os.close(dp.r), os.close(dp.w)


@pytest.mark.parametrize("all_at_once", [False, True])
def test_used_mappings_are_reported_to_on_used(monkeypatch, all_at_once):
    """all_at_once: the datapath reads every mapping's counters in one go
    (Datapath.all_mapping_counters: one read of the flow caches), and the
    poll uses that instead of one mapping_counters call per entry."""
    import lispctl.daemon.runtime as rt_mod
    monkeypatch.setattr(rt_mod, "USAGE_POLL_S", 0.05)
    dp = FakeDatapath()
    packets = {}
    dp.mapping_counters = lambda eid: (packets.get(eid, 0), 0)
    if all_at_once:
        def one(eid):
            raise AssertionError("polled one by one")
        dp.mapping_counters = one
        dp.all_mapping_counters = lambda: {e: (packets.get(e, 0), 0) for e in (_a, b)}
    role = FakeRole()
    used_calls = []
    role.on_used = lambda eids, now: used_calls.append(sorted(eids)) or []
    _a, b = EidPrefix.parse("10.2.0.0/16"), EidPrefix.parse("10.3.0.0/16")

    async def body(rt):
        to = ("127.0.0.1", rt.sockets.port)
        await _quiet(b"install 10.2.0.0/16", to)
        await _quiet(b"install 10.3.0.0/16", to)
        await asyncio.sleep(0.12)
        packets[b] = 7                      # traffic on b only
        await asyncio.sleep(0.12)
    run(body, role=role, datapath=dp, binds=["127.0.0.1"])
    assert used_calls == [[b]]             # once: the counter moved once
    os.close(dp.r), os.close(dp.w)


def test_map_cache_view_orders_mixed_families():
    # IPv4 and IPv6 entries together: EidPrefix's own order raises TypeError
    # across families, which broke `lispctl map-cache` on every dual-stack xTR.
    dp = FakeDatapath()

    async def body(rt):
        to = ("127.0.0.1", rt.sockets.port)
        await _quiet(b"install fd00:2::/64", to)
        await _quiet(b"install 10.2.0.0/16", to)
        return rt.map_cache()
    view = run(body, datapath=dp, binds=["127.0.0.1"])
    assert [e["eid"] for e in view] == ["10.2.0.0/16", "fd00:2::/64"]
    os.close(dp.r), os.close(dp.w)


def test_deadline_moved_earlier_or_later_ticks_at_the_current_deadline():
    # The armed timer is only moved when a deadline comes earlier; one that
    # moved later must still not tick the role before it is due.
    async def body(rt, first, second):
        loop = asyncio.get_running_loop()
        to = ("127.0.0.1", rt.sockets.port)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.setblocking(False)
            t0 = loop.time()
            s.sendto(b"timer %g" % first, to)
            await asyncio.sleep(0.02)
            s.sendto(b"timer %g" % second, to)
            data = await asyncio.wait_for(loop.sock_recv(s, 100), 3.0)
            return data, loop.time() - t0
    role = FakeRole()
    data, elapsed = run(lambda rt: body(rt, 5.0, 0.1), role=role, binds=["127.0.0.1"])
    assert data == b"tick 1" and 0.1 <= elapsed < 1.0
    role = FakeRole()
    data, elapsed = run(lambda rt: body(rt, 0.05, 0.3), role=role, binds=["127.0.0.1"])
    assert data == b"tick 1" and elapsed >= 0.3 and role.ticks == 1
