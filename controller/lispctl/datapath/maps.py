"""BPF maps and the miss ring buffer through raw bpf(2), without bcc.

The daemon must not keep bcc (and LLVM) resident: they cost ~200 MB. The
programs are compiled and loaded by a short-lived child (prebuilt.py) that
pins them; this process opens the pins and uses these classes, which offer
the part of bcc's table API the data plane uses (`Key`, `Leaf`, item access,
`keys()`, per-CPU `sum()`/`clear()`), with the ctypes layouts bcc derived
from the program, handed over as JSON (`describe`/`rebuild`).
"""
from __future__ import annotations

import ctypes
import mmap
import os
import struct
import sys
from typing import Any, Callable, Iterator

from lispctl.datapath.errors import DatapathError
from lispctl.datapath.syscall import bpf

BPF_MAP_LOOKUP_ELEM, BPF_MAP_UPDATE_ELEM, BPF_MAP_DELETE_ELEM, BPF_MAP_GET_NEXT_KEY = 1, 2, 3, 4
BPF_OBJ_PIN, BPF_OBJ_GET, BPF_OBJ_GET_INFO_BY_FD = 6, 7, 15
BPF_MAP_UPDATE_BATCH, BPF_MAP_DELETE_BATCH = 26, 27
BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_PROG_ARRAY = 1, 2, 3
BPF_MAP_TYPE_PERCPU_HASH, BPF_MAP_TYPE_PERCPU_ARRAY = 5, 6
BPF_MAP_TYPE_RINGBUF = 27
_ARRAYS = (BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_PERCPU_ARRAY)
_PERCPU = (BPF_MAP_TYPE_PERCPU_HASH, BPF_MAP_TYPE_PERCPU_ARRAY)
_ENOENT = 2
BATCH = 8192            # elements per BPF_MAP_*_BATCH call (the kernel loops, with cond_resched)


def _u32(v: int) -> bytes:
    return v.to_bytes(4, sys.byteorder)


def _u64(v: int) -> bytes:
    return v.to_bytes(8, sys.byteorder)


def obj_pin(fd: int, path: str) -> None:
    pb = ctypes.create_string_buffer(path.encode())
    bpf(BPF_OBJ_PIN, _u64(ctypes.addressof(pb)) + _u32(fd) + _u32(0))


def obj_get(path: str) -> int:
    pb = ctypes.create_string_buffer(path.encode())
    return bpf(BPF_OBJ_GET, _u64(ctypes.addressof(pb)) + _u32(0) + _u32(0))


class MapInfo(ctypes.Structure):
    """The leading, stable part of UAPI struct bpf_map_info."""
    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("key_size", ctypes.c_uint32),
                ("value_size", ctypes.c_uint32), ("max_entries", ctypes.c_uint32),
                ("map_flags", ctypes.c_uint32), ("name", ctypes.c_char * 16)]


class ProgInfo(ctypes.Structure):
    """The leading part of UAPI struct bpf_prog_info (up to map_ids)."""
    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("tag", ctypes.c_uint8 * 8),
                ("jited_prog_len", ctypes.c_uint32), ("xlated_prog_len", ctypes.c_uint32),
                ("jited_prog_insns", ctypes.c_uint64), ("xlated_prog_insns", ctypes.c_uint64),
                ("load_time", ctypes.c_uint64), ("created_by_uid", ctypes.c_uint32),
                ("nr_map_ids", ctypes.c_uint32), ("map_ids", ctypes.c_uint64)]


def obj_info(fd: int, info) -> None:
    bpf(BPF_OBJ_GET_INFO_BY_FD, _u32(fd) + _u32(ctypes.sizeof(info)) + _u64(ctypes.addressof(info)))


def prog_map_ids(fd: int) -> set[int]:
    """Ids of the maps a loaded program uses."""
    ids = (ctypes.c_uint32 * 64)()
    info = ProgInfo()
    info.nr_map_ids = 64
    info.map_ids = ctypes.addressof(ids)
    obj_info(fd, info)
    return set(ids[:min(info.nr_map_ids, 64)])


# ---- ctypes layouts as JSON ------------------------------------------------
def describe(t) -> Any:
    """A JSON-able description of a ctypes type bcc built for a map."""
    if isinstance(t, type) and issubclass(t, ctypes.Array):
        return {"array": describe(t._type_), "n": t._length_}
    if isinstance(t, type) and issubclass(t, (ctypes.Structure, ctypes.Union)):
        return {"kind": "union" if issubclass(t, ctypes.Union) else "struct", "name": t.__name__,
                "pack": getattr(t, "_pack_", 0), "anonymous": list(getattr(t, "_anonymous_", ())),
                "fields": [[f[0], describe(f[1]), *f[2:]] for f in t._fields_]}
    return t.__name__


def rebuild(d: Any):
    if isinstance(d, str):
        return getattr(ctypes, d)
    if "array" in d:
        return rebuild(d["array"]) * d["n"]
    base = ctypes.Union if d["kind"] == "union" else ctypes.Structure
    ns: dict[str, Any] = {}
    if d["pack"]:
        ns["_pack_"] = d["pack"]
    if d["anonymous"]:
        ns["_anonymous_"] = tuple(d["anonymous"])
    ns["_fields_"] = [(f[0], rebuild(f[1]), *f[2:]) for f in d["fields"]]
    return type(d["name"], (base,), ns)


class Table:
    """One map: bcc's table API, the part we use. Per-CPU maps: `Leaf` is
    the per-CPU array of `sLeaf` (as in bcc)."""

    def __init__(self, fd: int, key_type, leaf_type, name: str = "") -> None:
        self.map_fd = fd
        self.name = name
        info = MapInfo()
        obj_info(fd, info)
        self.map_type, self.max_entries = info.type, info.max_entries
        self.Key, self.sLeaf = key_type, leaf_type
        if ctypes.sizeof(key_type) != info.key_size or ctypes.sizeof(leaf_type) != info.value_size:
            raise DatapathError(f"map {name}: layout ({ctypes.sizeof(key_type)}/{ctypes.sizeof(leaf_type)} "
                                f"bytes) disagrees with the loaded map ({info.key_size}/{info.value_size})")
        self.percpu = info.type in _PERCPU
        if self.percpu:
            from lispctl.datapath.pinned import possible_cpus
            self.ncpu = possible_cpus()
            self._stride = (ctypes.sizeof(leaf_type) + 7) & ~7
            self.Leaf = leaf_type * self.ncpu
        else:
            self.Leaf = leaf_type
        self.key_size = info.key_size
        # bytes of one element's value in a syscall: per-CPU maps take one
        # 8-byte aligned slot per possible CPU
        self.value_size = self._stride * self.ncpu if self.percpu else info.value_size
        self._batch: bool | None = None

    # ---- bulk operations ------------------------------------------------
    @property
    def batch_supported(self) -> bool:
        """Whether the kernel takes BPF_MAP_UPDATE/DELETE_BATCH for this map.
        Asked once (an empty batch: the kernel answers ENOTSUPP or EINVAL
        for map types or kernels without it), then every bulk call uses the
        answer: batched, or one bpf(2) per element."""
        if self._batch is None:
            try:
                for cmd in (BPF_MAP_UPDATE_BATCH, BPF_MAP_DELETE_BATCH):
                    bpf(cmd, self._batch_attr(0, 0, 0))
                self._batch = self.map_type not in _ARRAYS
            except OSError:
                self._batch = False
        return self._batch

    def _batch_attr(self, keys: int, values: int, count: int) -> bytes:
        # union bpf_attr.batch: in_batch, out_batch, keys, values, count, map_fd, elem_flags, flags
        return _u64(0) + _u64(0) + _u64(keys) + _u64(values) + _u32(count) + _u32(self.map_fd) + _u64(0) + _u64(0)

    def update_many(self, keys, values, batch: bool | None = None) -> None:
        """Insert or replace n elements: keys holds n packed keys back to
        back (key_size each), values n packed values (value_size each, per-CPU
        maps: every CPU's slot). Raises OSError at the first failure."""
        n = len(keys) // self.key_size
        if len(keys) != n * self.key_size or len(values) != n * self.value_size:
            raise DatapathError(f"map {self.name}: {len(keys)} key bytes / {len(values)} value bytes "
                                f"do not hold whole elements of {self.key_size}/{self.value_size}")
        if n == 0:
            return
        kb = (ctypes.c_char * len(keys)).from_buffer(keys) if isinstance(keys, bytearray) \
            else ctypes.create_string_buffer(bytes(keys), len(keys))
        vb = (ctypes.c_char * len(values)).from_buffer(values) if isinstance(values, bytearray) \
            else ctypes.create_string_buffer(bytes(values), len(values))
        ka, va = ctypes.addressof(kb), ctypes.addressof(vb)
        if self.batch_supported if batch is None else batch:
            done = 0
            while done < n:
                cnt = min(BATCH, n - done)
                bpf(BPF_MAP_UPDATE_BATCH, self._batch_attr(ka + done * self.key_size,
                                                          va + done * self.value_size, cnt))
                done += cnt
            return
        ks, vs, fd = self.key_size, self.value_size, _u32(self.map_fd) + _u32(0)
        for i in range(n):
            bpf(BPF_MAP_UPDATE_ELEM, fd + _u64(ka + i * ks) + _u64(va + i * vs) + _u64(0))

    def delete_many(self, keys, batch: bool | None = None) -> int:
        """Delete n packed keys (back to back); keys not in the map are
        skipped. Returns how many were deleted."""
        n = len(keys) // self.key_size
        if len(keys) != n * self.key_size:
            raise DatapathError(f"map {self.name}: {len(keys)} key bytes are not whole keys of {self.key_size}")
        if n == 0:
            return 0
        kb = ctypes.create_string_buffer(bytes(keys), len(keys))
        ka, ks = ctypes.addressof(kb), self.key_size
        deleted = 0
        if self.batch_supported if batch is None else batch:
            count = ctypes.c_uint32()
            done = 0
            while done < n:
                cnt = min(BATCH, n - done)
                attr = ctypes.create_string_buffer(self._batch_attr(ka + done * ks, 0, cnt), 128)
                try:
                    bpf(BPF_MAP_DELETE_BATCH, attr, 128)
                    ok = cnt
                except OSError as exc:
                    if exc.errno != _ENOENT:
                        raise
                    # stopped at a key that is not there: skip it
                    ctypes.memmove(ctypes.addressof(count), ctypes.addressof(attr) + 32, 4)
                    ok = count.value
                    done += 1
                deleted += ok
                done += ok
            return deleted
        fd = _u32(self.map_fd) + _u32(0)
        for i in range(n):
            try:
                bpf(BPF_MAP_DELETE_ELEM, fd + _u64(ka + i * ks) + _u64(0) + _u64(0))
                deleted += 1
            except OSError as exc:
                if exc.errno != _ENOENT:
                    raise
        return deleted

    def _attr(self, key, value=None, flags: int = 0) -> bytes:
        return (_u32(self.map_fd) + _u32(0) + _u64(ctypes.addressof(key))
                + _u64(ctypes.addressof(value) if value is not None else 0) + _u64(flags))

    def _key(self, key):
        return key if isinstance(key, self.Key) else self.Key(key)

    def __getitem__(self, key):
        key = self._key(key)
        if self.percpu:
            buf = ctypes.create_string_buffer(self._stride * self.ncpu)
        else:
            buf = self.Leaf()
        try:
            bpf(BPF_MAP_LOOKUP_ELEM, self._attr(key, buf))
        except OSError as exc:
            if exc.errno == _ENOENT:
                raise KeyError(key) from None
            raise
        if not self.percpu:
            return buf
        out = self.Leaf()
        n = ctypes.sizeof(self.sLeaf)
        for i in range(self.ncpu):
            ctypes.memmove(ctypes.addressof(out) + i * n, ctypes.addressof(buf) + i * self._stride, n)
        return out

    def __setitem__(self, key, leaf) -> None:
        key = self._key(key)
        if self.percpu:
            buf = ctypes.create_string_buffer(self._stride * self.ncpu)
            n = ctypes.sizeof(self.sLeaf)
            items = [leaf] * self.ncpu if isinstance(leaf, self.sLeaf) else list(leaf)
            for i, v in enumerate(items):
                ctypes.memmove(ctypes.addressof(buf) + i * self._stride, ctypes.addressof(v), n)
            leaf = buf
        bpf(BPF_MAP_UPDATE_ELEM, self._attr(key, leaf))

    def __delitem__(self, key) -> None:
        key = self._key(key)
        if self.map_type in _ARRAYS:
            self[key] = self.Leaf() if not self.percpu else self.sLeaf()
            return
        try:
            bpf(BPF_MAP_DELETE_ELEM, self._attr(key))
        except OSError as exc:
            if exc.errno == _ENOENT:
                raise KeyError(key) from None
            raise

    def __contains__(self, key) -> bool:
        try:
            self[key]
            return True
        except KeyError:
            return False

    def get(self, key, default=None):
        try:
            return self[key]
        except KeyError:
            return default

    def keys(self) -> Iterator:
        if self.map_type in _ARRAYS:
            yield from (self.Key(i) for i in range(self.max_entries))
            return
        cur = None
        while True:
            nxt = self.Key()
            attr = (_u32(self.map_fd) + _u32(0) + _u64(ctypes.addressof(cur) if cur is not None else 0)
                    + _u64(ctypes.addressof(nxt)))
            try:
                bpf(BPF_MAP_GET_NEXT_KEY, attr)
            except OSError as exc:
                if exc.errno == _ENOENT:
                    return
                raise
            cur = nxt
            yield nxt

    def __iter__(self) -> Iterator:
        return self.keys()

    def items(self) -> Iterator:
        for k in list(self.keys()):
            try:
                yield k, self[k]
            except KeyError:
                continue

    def values(self) -> Iterator:
        return (v for _, v in self.items())

    def __len__(self) -> int:
        return sum(1 for _ in self.keys())

    def sum(self, key):
        """Per-CPU maps of a scalar: the total over CPUs, as an sLeaf."""
        return self.sLeaf(sum(int(v) if not hasattr(v, "value") else int(v.value) for v in self[key]))

    def clear(self) -> None:
        for k in list(self.keys()):
            try:
                del self[k]
            except KeyError:
                pass

    def close(self) -> None:
        if self.map_fd >= 0:
            os.close(self.map_fd)
            self.map_fd = -1


class RingBuffer:
    """Consumer side of a BPF ring buffer map (kernel/bpf/ringbuf.c layout):
    page 0 the consumer position (ours to write), page 1 the producer
    position, then the data area mapped twice so records never wrap. The fd
    is pollable: readable when records wait."""
    _BUSY, _DISCARD, _HDR = 1 << 31, 1 << 30, 8

    def __init__(self, fd: int, callback: Callable[[bytes], int]) -> None:
        info = MapInfo()
        obj_info(fd, info)
        if info.type != BPF_MAP_TYPE_RINGBUF:
            raise DatapathError("not a ring buffer map")
        self.fd = fd
        self.size = info.max_entries
        self.mask = self.size - 1
        self.page = mmap.PAGESIZE
        self._cons = mmap.mmap(fd, self.page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._prod = mmap.mmap(fd, self.page + 2 * self.size, mmap.MAP_SHARED, mmap.PROT_READ,
                               offset=self.page)
        self.callback = callback

    def consume(self) -> int:
        """Hand every committed record (a copy) to callback, until it returns
        a negative number (that record is consumed); returns how many."""
        n = 0
        cons = struct.unpack_from("=Q", self._cons, 0)[0]
        while True:
            prod = struct.unpack_from("=Q", self._prod, 0)[0]
            if cons >= prod:
                break
            off = self.page + (cons & self.mask)
            hdr_len = struct.unpack_from("=I", self._prod, off)[0]
            if hdr_len & self._BUSY:
                break                              # reserved, not yet committed
            length = hdr_len & ~(self._BUSY | self._DISCARD)
            stop = False
            if not hdr_len & self._DISCARD:
                stop = (self.callback(self._prod[off + self._HDR:off + self._HDR + length]) or 0) < 0
                n += 1
            cons += (length + self._HDR + 7) & ~7
            struct.pack_into("=Q", self._cons, 0, cons)
            if stop:
                break
        return n

    def close(self) -> None:
        self._cons.close()
        self._prod.close()
