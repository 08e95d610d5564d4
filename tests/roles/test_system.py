"""Three devices (two xTRs, one MS+MR) on an in-memory network: registration,
resolution through MR -> MS -> ETR, proxy-reply, and an SMR after a locator change.
Every datagram goes through the wire encoders/decoders; no sockets."""
import heapq
import itertools

from lispctl.config import loads
from lispctl.mapping.types import EidPrefix, MapAction, Rloc
from lispctl.roles import datapath_plan
from lispctl.roles.base import Endpoint, InstallMapping, MissEvent, RemoveMapping, Send

import roles_helpers
from roles_helpers import MSMR, A, make

P = EidPrefix.parse
MS_ADDR = "198.51.100.10"


def xtr_text(name, eid, rloc):
    return roles_helpers.xtr_text(name, eid, "secret-a" if eid.startswith("10.1") else "secret-b", MS_ADDR)


class Net:
    """Delivers Sends to the device owning the destination address, in time order."""

    def __init__(self):
        self.devices = {}      # address -> (name, roles)
        self.queue = []
        self.seq = itertools.count()
        self.installed = {}    # device -> {eid: InstallMapping}
        self.log = []

    def add(self, name, text, addrs, seed):
        cfg, by_name = make(text, seed, wan0=addrs)
        roles = list(by_name.items())
        for a in addrs:
            self.devices[A(a)] = (name, roles)
        self.installed[name] = {}
        return cfg, roles

    def apply(self, name, effects, now, src_addr):
        for e in effects:
            if isinstance(e, Send):
                src = e.src or Endpoint(src_addr, 4342)
                heapq.heappush(self.queue, (now + 0.001, next(self.seq), e, src))
            elif isinstance(e, InstallMapping):
                self.installed[name][e.eid] = e
            elif isinstance(e, RemoveMapping):
                self.installed[name].pop(e.eid, None)

    def run(self, until, t0):
        now = t0
        while True:
            deadlines = []
            for name, roles in {n: r for n, r in self.devices.values()}.items():
                for _, role in roles:
                    d = role.next_deadline()
                    if d is not None:
                        deadlines.append((max(d, now), name, role))
            nxt_msg = self.queue[0][0] if self.queue else None
            nxt_tick = min(deadlines, key=lambda x: x[0])[0] if deadlines else None
            cands = [t for t in (nxt_msg, nxt_tick) if t is not None]
            if not cands or min(cands) > until:
                return
            now = min(cands)
            if nxt_msg is not None and nxt_msg <= now:
                _, _, send, src = heapq.heappop(self.queue)
                dev = self.devices.get(send.dst.addr)
                self.log.append((now, str(src.addr), str(send.dst.addr), send.payload[0] >> 4))
                if dev is None:
                    continue
                name, roles = dev
                for _, role in roles:
                    self.apply(name, role.handle(send.payload, src, send.dst, now), now, send.dst.addr)
                continue
            for t, name, role in deadlines:
                if t <= now:
                    addr = next(a for a, (n, _) in self.devices.items() if n == name)
                    self.apply(name, role.tick(now), now, addr)

    def miss(self, name, dst, src, now):
        roles = next(r for n, r in self.devices.values() if n == name)
        addr = next(a for a, (n, _) in self.devices.items() if n == name)
        for _, role in roles:
            if hasattr(role, "on_miss"):
                self.apply(name, role.on_miss(MissEvent(P(dst), A(src)), now), now, addr)


def build():
    net = Net()
    net.add("ms", MSMR.format(roles='["ms", "mr"]'), [MS_ADDR], 1)
    _, a = net.add("a", xtr_text("a", "10.1.0.0/16", "192.0.2.1"), ["192.0.2.1"], 2)
    _, b = net.add("b", xtr_text("b", "10.2.0.0/16", "203.0.113.2"), ["203.0.113.2"], 3)
    return net, dict(a), dict(b)


def test_register_resolve_through_ms_to_etr():
    net, a, b = build()
    net.run(until=5.0, t0=0.0)
    ms = next(r for n, r in net.devices[A(MS_ADDR)][1] if n == "ms")
    snap = ms.snapshot()
    assert [p["registered"] for p in snap["sites"][0]["eid_prefixes"]] == [True]
    assert [p["registered"] for p in snap["sites"][1]["eid_prefixes"]] == [True, False]
    assert a["etr"].snapshot()["map_servers"][0]["registered"] is True
    net.miss("b", "10.1.7.7/32", "10.2.0.5", 10.0)
    net.run(until=15.0, t0=10.0)
    got = net.installed["b"][P("10.1.0.0/16")]
    assert got.rlocs == (Rloc(A("192.0.2.1")),) and got.action is MapAction.NO_ACTION
    # site-a does not proxy: the answer came from a's ETR, to which the MS forwarded
    types = [(s, d, t) for tm, s, d, t in net.log if t in (8, 2) and tm >= 10.0]
    assert types == [("203.0.113.2", MS_ADDR, 8), (MS_ADDR, "192.0.2.1", 8), ("192.0.2.1", "203.0.113.2", 2)]
    # refreshes every minute keep both registered well past the 180 s timeout
    net.run(until=400.0, t0=15.0)
    assert ms.snapshot()["sites"][1]["eid_prefixes"][0]["registered"] is True


def test_proxy_reply_and_negative_reply():
    net, a, b = build()
    net.run(until=5.0, t0=0.0)
    net.miss("a", "10.2.7.7/32", "10.1.0.5", 10.0)          # site-b: proxy-reply in the MS config
    net.miss("a", "192.0.2.200/32", "10.1.0.5", 10.0)
    net.run(until=15.0, t0=10.0)
    assert net.installed["a"][P("10.2.0.0/16")].rlocs == (Rloc(A("203.0.113.2")),)
    neg = net.installed["a"][P("128.0.0.0/1")]
    assert neg.rlocs == () and neg.action is MapAction.NATIVELY_FORWARD and neg.ttl_s == 900
    assert not any(d == "203.0.113.2" and t == 8 for tm, s, d, t in net.log if tm >= 10.0)


def test_locator_change_smr_updates_remote_cache():
    net, a, b = build()
    net.run(until=5.0, t0=0.0)
    net.miss("b", "10.1.7.7/32", "10.2.0.5", 10.0)
    net.run(until=15.0, t0=10.0)
    assert net.installed["b"][P("10.1.0.0/16")].rlocs == (Rloc(A("192.0.2.1")),)
    # a moves to a new RLOC: re-registers and SMRs b, which re-queries via the MR
    net.devices[A("192.0.2.9")] = net.devices[A("192.0.2.1")]
    net.apply("a", a["etr"].set_interface_addresses("wan0", [A("192.0.2.9")], 20.0), 20.0, A("192.0.2.9"))
    net.run(until=25.0, t0=20.0)
    assert net.installed["b"][P("10.1.0.0/16")].rlocs == (Rloc(A("192.0.2.9")),)
    assert b["itr"].counters["smr_rx"] == 1 and a["etr"].counters["smr_tx"] == 1
    plan = datapath_plan(loads(xtr_text("a", "10.1.0.0/16", "x")), list(a.items()))
    assert plan.local_rlocs == (A("192.0.2.9"),) and plan.local_eids == (P("10.1.0.0/16"),)
