"""Map-cache tables installed in bulk: `datapath.map-cache-files` at start,
`lispctl map-cache load FILE` / `unload NAME` at any time (local API).

A table goes straight from its file (lispctl.mapping.bulkfile) into the data
plane with batched map updates (Datapath.load_bulk); it is not held entry by
entry in the ITR's map-cache, so a million mappings cost the daemon tens of
MB and seconds, not gigabytes and minutes. The ITR's dynamic map-cache gets
what the tables leave of the capacity. A table loaded with a TTL is removed
when it runs out (as fast as unload); loading a name again replaces the
table. Through the API the file is parsed in a worker thread; the map
updates run on the loop (a few seconds per million mappings, during which
control messages wait in the socket buffers).
"""
from __future__ import annotations

import asyncio
import ctypes
import logging
import time
from pathlib import Path
from typing import Any

from lispctl.api.protocol import ApiError
from lispctl.datapath.errors import DatapathError
from lispctl.mapping.bulkfile import BulkFormatError, BulkTable, parse

log = logging.getLogger("lispctl.daemon")


def _read(path: Path, ttl_s: float | None) -> BulkTable:
    if ttl_s is not None and not ttl_s > 0:
        raise ApiError(f"ttl must be a positive number of seconds, not {ttl_s!r}")
    try:
        with open(path, encoding="utf-8", buffering=1 << 20) as fh:     # line by line: never held whole
            return parse(fh, source=str(path))
    except (OSError, UnicodeDecodeError) as exc:
        raise ApiError(f"cannot read {path}: {exc}") from None
    except BulkFormatError as exc:
        raise ApiError(str(exc)) from None


def _trim() -> None:
    """Give freed heap back to the system (glibc keeps it otherwise): parsing
    and checking a table of millions of lines frees as many small objects,
    ~40 MB per million mappings that would stay in the daemon's RSS."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


class BulkTables:
    def __init__(self, datapath: Any, itr: Any = None, info: dict | None = None) -> None:
        self.dp = datapath
        self.itr = itr                       # its capacity shrinks by what the tables hold
        self.info = info if info is not None else {}    # the device's status facts
        self.base_capacity = itr.capacity if itr is not None else None
        self.base_family = dict(itr.family_capacity) if itr is not None else {}
        self.meta: dict[str, dict] = {}      # name -> path, ttl, loaded_at (wall clock)
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def load(self, path: str | Path, name: str | None = None, ttl_s: float | None = None) -> dict:
        """Parse and install (at start: datapath.map-cache-files)."""
        t0 = time.perf_counter()
        table = _read(Path(path), ttl_s)
        try:
            return self.install(Path(path), name, ttl_s, table, time.perf_counter() - t0)
        finally:
            del table
            _trim()

    async def load_async(self, path: str | Path, name: str | None = None, ttl_s: float | None = None) -> dict:
        """The API's load: the file is parsed in a worker thread, so the loop
        keeps serving control messages and API requests meanwhile (the GIL
        is handed over every few ms); the map updates run on the loop, like
        every other change to the data plane."""
        t0 = time.perf_counter()
        table = await asyncio.to_thread(_read, Path(path), ttl_s)
        try:
            return self.install(Path(path), name, ttl_s, table, time.perf_counter() - t0)
        finally:
            del table
            _trim()

    def install(self, path: Path, name: str | None, ttl_s: float | None, table: BulkTable,
                parse_s: float) -> dict:
        name = name or path.name
        parsed = time.perf_counter()
        replaced = 0
        if name in self.dp.bulk_tables():
            replaced = self.unload(name)["removed"]
        try:
            bs = self.dp.load_bulk(name, table)
        except DatapathError as exc:
            self._update_capacity()
            raise ApiError(str(exc)) from None
        done = time.perf_counter()
        self.meta[name] = {"path": str(path), "ttl_s": ttl_s, "loaded_at": time.time()}
        if ttl_s is not None:
            self._timers[name] = asyncio.get_running_loop().call_later(ttl_s, self._expire, name)
        self._update_capacity()
        out = {**bs.info(), "replaced": replaced, "parse_s": round(parse_s, 3),
               "install_s": round(done - parsed, 3), "ttl_s": ttl_s}
        log.info("map-cache table %s loaded from %s: %d IPv4 + %d IPv6 mappings (%d skipped) in %.2f s "
                 "(parsing %.2f s)", name, path, out["ipv4"], out["ipv6"], out["skipped"],
                 parse_s + done - parsed, parse_s)
        return out

    def unload(self, name: str) -> dict:
        t0 = time.perf_counter()
        try:
            n = self.dp.unload_bulk(name)
        except DatapathError as exc:
            raise ApiError(str(exc)) from None
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()
        self.meta.pop(name, None)
        self._update_capacity()
        _trim()
        took = time.perf_counter() - t0
        log.info("map-cache table %s unloaded: %d mappings in %.2f s", name, n, took)
        return {"name": name, "removed": n, "remove_s": round(took, 3)}

    def _expire(self, name: str) -> None:
        self._timers.pop(name, None)
        if name in self.dp.bulk_tables():
            log.info("map-cache table %s: TTL ran out", name)
            self.unload(name)

    def _update_capacity(self) -> None:
        if self.itr is not None and self.base_capacity is not None:
            tables = self.dp.bulk_tables().values()
            held = sum(len(b) for b in tables)
            self.itr.capacity = max(0, self.base_capacity - held)
            for v, cap in self.base_family.items():
                self.itr.family_capacity[v] = max(0, cap - sum(b.count(v) for b in tables))
            self.info["map_cache_capacity"] = self.itr.capacity

    def snapshot(self) -> list[dict]:
        now = time.time()
        out = []
        for name, bs in self.dp.bulk_tables().items():
            m = self.meta.get(name, {})
            ttl = m.get("ttl_s")
            left = None if ttl is None else round(max(0.0, m["loaded_at"] + ttl - now), 1)
            out.append({**bs.info(), "path": m.get("path"), "expires_in_s": left})
        return out

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
