"""An undo journal for the kernel state lispctl changes.

Every link, address, route and rule the controller adds goes through
`NetChanges`, which remembers how to take it away again. `restore()` undoes
everything in reverse order, so a controller that exits (cleanly or by an
exception inside `async with`) leaves the routing state as it found it.

Async because the daemon is asyncio: pyroute2's synchronous IPRoute runs its
own event loop and cannot be used while another loop is running.
"""
from __future__ import annotations

import errno
import logging
from dataclasses import dataclass, field
from typing import Any

from pyroute2.iproute.linux import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

log = logging.getLogger(__name__)

# Routes and rules we install carry this protocol number, so an operator can
# tell them apart (`ip route show table all proto 79`, `ip rule show proto 79`).
RTPROT_LISPCTL = 79

# Errors that mean "already gone": the kernel removed it for us (a link went
# down and took its routes with it, a deleted link took its addresses).
_GONE = frozenset({errno.ENOENT, errno.ESRCH, errno.ENODEV, errno.EADDRNOTAVAIL})


class NetError(RuntimeError):
    """A netlink request failed; .errno holds the kernel's error code (or None)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.errno = code


@dataclass(eq=False)
class Change:
    """One recorded change: `kind` is link/addr/route/rule, `undo` the pyroute2 'del' arguments."""
    kind: str
    undo: dict[str, Any]
    reverted: bool = field(default=False)

    def __repr__(self) -> str:
        return f"Change({self.kind}, {self.undo})"


async def open_iproute(netns: str | None = None) -> AsyncIPRoute:
    """An AsyncIPRoute in `netns` (a name under /var/run/netns or a path), never creating it."""
    try:
        # flags=0: pyroute2's default (O_CREAT) would silently create a missing netns.
        return AsyncIPRoute(netns=netns, flags=0) if netns else AsyncIPRoute()
    except OSError as exc:
        raise NetError(f"cannot open rtnetlink in netns {netns!r}: {exc}", exc.errno) from exc


class NetChanges:
    """Adds links/addresses/routes/rules and records how to remove them."""

    def __init__(self, ipr: AsyncIPRoute, *, owns_ipr: bool = False) -> None:
        self.ipr = ipr
        self._owns = owns_ipr
        self._journal: list[Change] = []

    @classmethod
    async def open(cls, netns: str | None = None) -> "NetChanges":
        return cls(await open_iproute(netns), owns_ipr=True)

    @property
    def pending(self) -> list[Change]:
        """Changes not yet undone, oldest first."""
        return [c for c in self._journal if not c.reverted]

    async def _call(self, kind: str, command: str, spec: dict[str, Any]) -> Any:
        method = getattr(self.ipr, kind)
        try:
            return await method(command, **spec)
        except NetlinkError as exc:
            raise NetError(f"{kind} {command} {spec}: {exc}", exc.code) from exc

    async def add_link(self, **spec: Any) -> Change:
        """ipr.link('add', **spec); undone by deleting the link (by index, never by name pattern)."""
        await self._call("link", "add", spec)
        found = await self.ipr.link_lookup(ifname=spec["ifname"])
        if not found:
            raise NetError(f"link {spec['ifname']} vanished after creation")
        return self._record("link", {"index": found[0]})

    async def add_addr(self, **spec: Any) -> Change:
        await self._call("addr", "add", spec)
        undo: dict[str, Any] = {k: spec[k] for k in ("index", "address", "prefixlen") if k in spec}
        return self._record("addr", undo)

    async def add_route(self, *, replace: bool = False, **spec: Any) -> Change:
        """Add (or with replace=True, replace) a route; the undo deletes exactly that route."""
        await self._call("route", "replace" if replace else "add", spec)
        keys = ("family", "dst", "dst_len", "table", "oif", "gateway", "priority", "type",
                "proto", "prefsrc")
        undo = {k: spec[k] for k in keys if k in spec}
        # IPv4 deletes only match a route of the same scope; 255 (nowhere) matches any.
        undo["scope"] = spec.get("scope", 255)
        return self._record("route", undo)

    async def add_rule(self, **spec: Any) -> Change:
        await self._call("rule", "add", spec)
        keys = ("family", "priority", "table", "src", "src_len", "dst", "dst_len",
                "fwmark", "iifname", "oifname", "suppress_prefixlength", "protocol")
        return self._record("rule", {k: spec[k] for k in keys if k in spec})

    def _record(self, kind: str, undo: dict[str, Any]) -> Change:
        change = Change(kind, undo)
        self._journal.append(change)
        return change

    async def revert(self, change: Change) -> None:
        """Undo one change now (e.g. an uplink went away). Already-gone is not an error."""
        if change.reverted:
            return
        try:
            await getattr(self.ipr, change.kind)("del", **change.undo)
        except NetlinkError as exc:
            if exc.code not in _GONE:
                raise NetError(f"undo {change}: {exc}", exc.code) from exc
            log.debug("undo %s: already gone (%s)", change, exc)
        change.reverted = True

    async def restore(self) -> None:
        """Undo every recorded change, newest first. Tries them all, then raises the first failure."""
        first: NetError | None = None
        for change in reversed(self._journal):
            try:
                await self.revert(change)
            except NetError as exc:
                log.error("restore: %s", exc)
                first = first or exc
        self._journal = [c for c in self._journal if not c.reverted]
        if first is not None:
            raise first

    async def close(self) -> None:
        if self._owns:
            self.ipr.close()
