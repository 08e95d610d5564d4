"""EID-prefix routes an xTR installs, removed again on exit.

An ITR needs the kernel to send traffic for remote EID prefixes into the
device carrying its tc encap program; an ETR may need routes for its own
EID prefixes toward the site. Each route is keyed by (table, prefix): adding
the same key again moves the route (the old one is removed first), so the
daemon can call add() whenever its idea of the route changes.
"""
from __future__ import annotations

import ipaddress
import socket
from typing import Union

from ..mapping.types import EidPrefix, IPAddress, IPNetwork
from .changes import RTPROT_LISPCTL, Change, NetChanges, NetError

RT_TABLE_MAIN = 254
PrefixLike = Union[EidPrefix, IPNetwork, str]


def _network(prefix: PrefixLike) -> IPNetwork:
    if isinstance(prefix, EidPrefix):
        return prefix.prefix
    if isinstance(prefix, str):
        return ipaddress.ip_network(prefix, strict=False)
    return prefix


class EidRoutes:
    """`async with EidRoutes(netns) as r: await r.add("10.2.0.0/16", "lisp0")`."""

    def __init__(self, netns: str | None = None, *, table: int = RT_TABLE_MAIN,
                 metric: int | None = None) -> None:
        self.netns = netns
        self.table = table
        self.metric = metric
        self._nc: NetChanges | None = None
        self._routes: dict[tuple[int, IPNetwork], tuple[dict, Change]] = {}

    async def open(self) -> "EidRoutes":
        if self._nc is None:
            self._nc = await NetChanges.open(self.netns)
        return self

    @property
    def routes(self) -> dict[tuple[int, IPNetwork], dict]:
        """(table, prefix) -> the route spec installed."""
        return {k: spec for k, (spec, _) in self._routes.items()}

    async def add(self, prefix: PrefixLike, ifname: str, *, gateway: IPAddress | str | None = None,
                  src: IPAddress | str | None = None, table: int | None = None,
                  metric: int | None = None) -> dict:
        """Route `prefix` toward `ifname` (optionally via `gateway`, with source hint `src`).

        Fails with NetError(errno 17) if the kernel already has that exact
        route and it is not ours: we never take over or later delete routes
        somebody else made.
        """
        await self.open()
        nc = self._nc
        assert nc is not None                   # open() set it
        net = _network(prefix)
        table = self.table if table is None else table
        found = await nc.ipr.link_lookup(ifname=ifname)
        if not found:
            raise NetError(f"no interface {ifname}", 19)
        await self.remove(net, table=table)
        spec = {"family": socket.AF_INET if net.version == 4 else socket.AF_INET6,
                "dst": str(net.network_address), "dst_len": net.prefixlen, "table": table,
                "oif": found[0], "proto": RTPROT_LISPCTL}
        metric = self.metric if metric is None else metric
        if metric is not None:
            spec["priority"] = metric
        if gateway is not None:
            spec["gateway"] = str(gateway)
        if src is not None:
            spec["prefsrc"] = str(src)
        change = await nc.add_route(**spec)
        self._routes[(table, net)] = (spec, change)
        return spec

    async def remove(self, prefix: PrefixLike, *, table: int | None = None) -> bool:
        """Remove our route for `prefix`; False if we had none."""
        table = self.table if table is None else table
        entry = self._routes.pop((table, _network(prefix)), None)
        if entry is None or self._nc is None:
            return False
        await self._nc.revert(entry[1])
        return True

    async def restore(self) -> None:
        """Remove every route added, newest first; safe to call twice."""
        nc, self._nc = self._nc, None
        self._routes.clear()
        if nc is None:
            return
        try:
            await nc.restore()
        finally:
            await nc.close()

    async def __aenter__(self) -> "EidRoutes":
        return await self.open()

    async def __aexit__(self, *exc) -> None:
        await self.restore()
