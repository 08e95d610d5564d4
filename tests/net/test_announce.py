"""RouteAnnouncer: a PITR's aggregates as blackhole routes in a dedicated
table with our protocol number, in a namespace of the test's own."""
import asyncio
import socket

from lispctl.lab import nsexec
from lispctl.mapping.types import EidPrefix


def _routes(table: int) -> set:
    from pyroute2 import IPRoute
    out = set()
    with IPRoute() as ipr:
        for fam in (socket.AF_INET, socket.AF_INET6):
            for r in ipr.get_routes(family=fam, table=table):
                if r.get_attr("RTA_TABLE", r.get("table")) == table:
                    out.add((f"{r.get_attr('RTA_DST')}/{r['dst_len']}", r["proto"], r["type"]))
    return out


def _scenario() -> dict:
    from pyroute2 import IPRoute

    from lispctl.net.announce import RouteAnnouncer
    out = {}
    with IPRoute() as ipr:      # a previous daemon's leftover, and someone else's route
        ipr.route("add", dst="10.9.0.0", dst_len=16, table=4343, proto=218, type=6)
        ipr.route("add", dst="10.8.0.0", dst_len=16, table=4343, proto=4, type=6)
    ann = RouteAnnouncer(4343, 218)
    out["flushed"] = ann.flush_stale()
    out["after_flush"] = _routes(4343)

    async def in_a_loop():      # the daemon calls set() from its event loop
        ann.set([EidPrefix.parse("10.1.0.0/16"), EidPrefix.parse("fd00:1::/48"),
                 EidPrefix.parse("10.2.0.0/16", 5)], True)
        ann.wait()
        out["up"] = await asyncio.to_thread(_routes, 4343)
        ann.set([EidPrefix.parse("10.1.0.0/16")], False)
        ann.wait()
        out["one_down"] = await asyncio.to_thread(_routes, 4343)
    asyncio.run(in_a_loop())
    ann.close()
    out["closed"] = _routes(4343)
    out["errors"] = ann.errors
    return out


def test_announce_withdraw_flush(ns):
    r = nsexec.call_in_netns(ns, _scenario)
    other = ("10.8.0.0/16", 4, 6)
    assert r["flushed"] == 1 and r["after_flush"] == {other}
    # instance 5 is not announced: the Internet has no instance IDs
    assert r["up"] == {other, ("10.1.0.0/16", 218, 6), ("fd00:1::/48", 218, 6)}
    assert r["one_down"] == {other, ("fd00:1::/48", 218, 6)}
    assert r["closed"] == {other} and r["errors"] == 0
