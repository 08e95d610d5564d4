"""A PITR's EID aggregates as kernel routes a BGP daemon exports.

lispctl speaks no BGP. While the PITR can serve its aggregates it installs
each as a blackhole route in a dedicated routing table (no `ip rule` points
at it, so forwarding on this host does not change), with a protocol number
of its own; a BGP daemon imports that table and announces what it finds
(BIRD 2: `protocol kernel { kernel table 4343; learn; ... }`, see
docs/interworking.md). Withdrawing is deleting the routes: the daemon's
netlink listener sees that at once.

Routes in (table, protocol) belong to us: at start anything left there by a
daemon that died without cleaning up is removed, and close() at stop
removes what we added.

pyroute2's synchronous IPRoute runs an asyncio loop of its own, which cannot
run inside the daemon's: every netlink call goes to one worker thread, which
also keeps announcements and withdrawals in the order they were made.
set() returns at once; close() waits for what is queued.
"""
from __future__ import annotations

import errno
import logging
import socket
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable

from ..mapping.types import EidPrefix

log = logging.getLogger("lispctl.net")

DEFAULT_TABLE = 4343
DEFAULT_PROTOCOL = 218
_RTN_BLACKHOLE = 6
_GONE = (errno.ESRCH, errno.ENOENT)


class RouteAnnouncer:
    def __init__(self, table: int = DEFAULT_TABLE, protocol: int = DEFAULT_PROTOCOL) -> None:
        self.table = table
        self.protocol = protocol
        self.installed: set[EidPrefix] = set()
        self.errors = 0
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="announce")
        self._ipr = self._worker.submit(self._open).result()

    @staticmethod
    def _open():
        from pyroute2.iproute.linux import IPRoute
        return IPRoute()

    def _run(self, fn, *args):
        """fn on the worker; errors are logged and counted (a failed
        announcement must not stop the daemon)."""
        def call():
            try:
                return fn(*args)
            except Exception:
                self.errors += 1
                log.exception("announcement route change failed")
        return self._worker.submit(call)

    def _args(self, eid: EidPrefix) -> dict:
        net = eid.prefix
        return {"dst": str(net.network_address), "dst_len": net.prefixlen,
                "family": socket.AF_INET if net.version == 4 else socket.AF_INET6,
                "table": self.table, "proto": self.protocol, "type": _RTN_BLACKHOLE}

    def flush_stale(self) -> int:
        """Remove every route of our (table, protocol): a previous daemon's."""
        return self._run(self._flush).result() or 0

    def _flush(self) -> int:
        n = 0
        for fam in (socket.AF_INET, socket.AF_INET6):
            for r in self._ipr.get_routes(family=fam, table=self.table):
                if r.get("proto") != self.protocol or r.get_attr("RTA_TABLE", r.get("table")) != self.table:
                    continue
                dst = r.get_attr("RTA_DST")
                if dst is None:
                    continue
                try:
                    self._ipr.route("del", family=fam, dst=dst, dst_len=r["dst_len"], table=self.table,
                                    proto=self.protocol, type=r["type"])
                    n += 1
                except Exception as exc:          # pyroute2 NetlinkError
                    if getattr(exc, "code", None) not in _GONE:
                        raise
        if n:
            log.info("removed %d stale announcement route(s) from table %d", n, self.table)
        return n

    def set(self, prefixes: Iterable[EidPrefix], up: bool) -> None:
        self._run(self._set, tuple(prefixes), up)

    def _set(self, prefixes: tuple[EidPrefix, ...], up: bool) -> None:
        for eid in prefixes:
            if eid.iid != 0:
                continue                          # the Internet has no instance IDs
            if up:
                self._ipr.route("replace", **self._args(eid))
                self.installed.add(eid)
            else:
                self._delete(eid)

    def _delete(self, eid: EidPrefix) -> None:
        try:
            self._ipr.route("del", **self._args(eid))
        except Exception as exc:
            if getattr(exc, "code", None) not in _GONE:
                raise
        self.installed.discard(eid)

    def _withdraw_all(self) -> None:
        for eid in list(self.installed):
            self._delete(eid)

    def wait(self) -> None:
        """Until every change queued so far is done."""
        self._run(lambda: None).result()

    def close(self) -> None:
        try:
            self._run(self._withdraw_all).result()
            self._run(self._ipr.close).result()
        finally:
            self._worker.shutdown(wait=True)
