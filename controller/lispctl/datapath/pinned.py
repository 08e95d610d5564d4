"""Read counters from an instance's pinned maps without compiling anything.

Opening a Datapath compiles the BPF programs (seconds); a monitor, a test or
the lab only wants numbers. This opens the pinned `counters` and `map_stats`
maps with raw bpf(2) calls. Layouts: the counter indexes come from the enums
of bpf/lisp_maps.h (as Datapath reads them), and the key and value sizes are
checked against what the kernel reports for the loaded map
(BPF_OBJ_GET_INFO_BY_FD), so a header that no longer matches the pinned maps
is an error, never a misread.

    from lispctl.datapath.pinned import read_counters, read_mapping_stats
    read_counters("xtr1")                 # Counters, like Datapath.counters()
    read_mapping_stats("xtr1")            # {mapping id: (packets, bytes)}
"""
from __future__ import annotations

import ctypes
import os
import re
import sys
from functools import lru_cache
from pathlib import Path

from lispctl.datapath.errors import DatapathError
from lispctl.datapath.loader import MAPS_HEADER, bpf_dir, header_enum
from lispctl.datapath.syscall import bpf

DEFAULT_PIN_BASE = Path("/sys/fs/bpf/lispctl")

BPF_MAP_LOOKUP_ELEM, BPF_MAP_GET_NEXT_KEY, BPF_OBJ_GET, BPF_OBJ_GET_INFO_BY_FD = 1, 4, 7, 15
BPF_MAP_LOOKUP_BATCH = 24
BATCH = 1024            # elements per BPF_MAP_LOOKUP_BATCH
BPF_MAP_TYPE_PERCPU_HASH, BPF_MAP_TYPE_PERCPU_ARRAY = 5, 6

_bpf = bpf


class _MapInfo(ctypes.Structure):
    """The leading, stable part of UAPI struct bpf_map_info."""
    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("key_size", ctypes.c_uint32),
                ("value_size", ctypes.c_uint32), ("max_entries", ctypes.c_uint32),
                ("map_flags", ctypes.c_uint32), ("name", ctypes.c_char * 16)]


@lru_cache(maxsize=1)
def possible_cpus() -> int:
    """Per-CPU map values hold one slot per *possible* CPU."""
    text = Path("/sys/devices/system/cpu/possible").read_text().strip()
    n = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        n += int(hi or lo) - int(lo) + 1
    return n


class PinnedMap:
    def __init__(self, path: Path) -> None:
        pb = ctypes.create_string_buffer(str(path).encode())
        try:
            self.fd = _bpf(BPF_OBJ_GET, ctypes.addressof(pb).to_bytes(8, sys.byteorder))
        except OSError as exc:
            raise DatapathError(f"cannot open pinned map {path}: {exc.strerror}") from exc
        info = _MapInfo()
        attr = self.fd.to_bytes(4, sys.byteorder) + ctypes.sizeof(info).to_bytes(4, sys.byteorder) + \
            ctypes.addressof(info).to_bytes(8, sys.byteorder)
        _bpf(BPF_OBJ_GET_INFO_BY_FD, attr)
        self.type, self.key_size, self.value_size = info.type, info.key_size, info.value_size
        self.max_entries = info.max_entries
        self.percpu = info.type in (BPF_MAP_TYPE_PERCPU_HASH, BPF_MAP_TYPE_PERCPU_ARRAY)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "PinnedMap":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _elem_attr(self, key, value) -> bytes:
        return (self.fd.to_bytes(4, sys.byteorder) + bytes(4) + ctypes.addressof(key).to_bytes(8, sys.byteorder)
                + ctypes.addressof(value).to_bytes(8, sys.byteorder) + bytes(8))

    def lookup(self, key: bytes) -> list[bytes] | None:
        """The value (per-CPU maps: one bytes object per possible CPU), or None."""
        stride = (self.value_size + 7) & ~7 if self.percpu else self.value_size
        n = possible_cpus() if self.percpu else 1
        k = ctypes.create_string_buffer(key, self.key_size)
        v = ctypes.create_string_buffer(stride * n)
        try:
            _bpf(BPF_MAP_LOOKUP_ELEM, self._elem_attr(k, v))
        except OSError as exc:
            if exc.errno == 2:
                return None
            raise
        raw = v.raw
        return [raw[i * stride:i * stride + self.value_size] for i in range(n)]

    def values_raw(self):
        """An array map's values in key order, as bytes blocks of whole
        elements (per-CPU maps: each element's per-CPU values, 8-byte
        aligned), BATCH elements per bpf(2) (BPF_MAP_LOOKUP_BATCH, 5.6+), or
        one lookup per key where the kernel refuses the batch."""
        stride = (self.value_size + 7) & ~7 if self.percpu else self.value_size
        per = stride * (possible_cpus() if self.percpu else 1)
        n = self.max_entries
        chunk = min(n, BATCH)
        keys = ctypes.create_string_buffer(4 * chunk)
        vals = ctypes.create_string_buffer(per * chunk)
        out_batch = ctypes.create_string_buffer(4)
        in_batch = ctypes.create_string_buffer(4)
        done, first = 0, True
        while done < n:
            count = ctypes.c_uint32(chunk)
            attr = ctypes.create_string_buffer(
                (0 if first else ctypes.addressof(in_batch)).to_bytes(8, sys.byteorder)
                + ctypes.addressof(out_batch).to_bytes(8, sys.byteorder)
                + ctypes.addressof(keys).to_bytes(8, sys.byteorder)
                + ctypes.addressof(vals).to_bytes(8, sys.byteorder)
                + chunk.to_bytes(4, sys.byteorder) + self.fd.to_bytes(4, sys.byteorder) + bytes(16), 56)
            last = False
            try:
                _bpf(BPF_MAP_LOOKUP_BATCH, attr, 56)
            except OSError as exc:
                if exc.errno != 2:              # ENOENT: the last elements came with it
                    if first:
                        yield from self._values_one_by_one(per)
                        return
                    raise
                last = True
            ctypes.memmove(ctypes.addressof(count), ctypes.addressof(attr) + 32, 4)
            yield vals.raw[:per * count.value]
            done += count.value
            if last or not count.value:
                return
            ctypes.memmove(in_batch, out_batch, 4)
            first = False

    def _values_one_by_one(self, per: int):
        for i in range(self.max_entries):
            k = ctypes.create_string_buffer(i.to_bytes(4, sys.byteorder), 4)
            v = ctypes.create_string_buffer(per)
            _bpf(BPF_MAP_LOOKUP_ELEM, self._elem_attr(k, v))
            yield v.raw

    def keys(self) -> list[bytes]:
        out: list[bytes] = []
        cur = None
        while True:
            k = ctypes.create_string_buffer(cur or bytes(self.key_size), self.key_size)
            nxt = ctypes.create_string_buffer(self.key_size)
            attr = (self.fd.to_bytes(4, sys.byteorder) + bytes(4)
                    + (ctypes.addressof(k) if cur is not None else 0).to_bytes(8, sys.byteorder)
                    + ctypes.addressof(nxt).to_bytes(8, sys.byteorder))
            try:
                _bpf(BPF_MAP_GET_NEXT_KEY, attr)
            except OSError as exc:
                if exc.errno == 2:
                    return out
                raise
            cur = nxt.raw
            out.append(cur)


def _struct_u64_fields(name: str) -> list[str]:
    """Field names of `struct name` in lisp_maps.h, which must be all __u64."""
    text = re.sub(r"/\*.*?\*/", "", (bpf_dir() / MAPS_HEADER).read_text(), flags=re.S)
    m = re.search(r"struct\s+" + name + r"\s*\{(.*?)\}", text, re.S)
    if not m:
        raise DatapathError(f"struct {name} not found in {MAPS_HEADER}")
    fields = []
    for decl in filter(None, (d.strip() for d in m.group(1).split(";"))):
        typ, _, field = decl.rpartition(" ")
        if typ.strip() not in ("__u64", "u64"):
            raise DatapathError(f"struct {name}: {decl!r} is not a __u64")
        fields.append(field)
    return fields


def _check(m: PinnedMap, what: str, key_size: int, value_size: int) -> None:
    if (m.key_size, m.value_size) != (key_size, value_size):
        raise DatapathError(f"pinned {what} has key/value sizes {m.key_size}/{m.value_size}, "
                            f"{MAPS_HEADER} says {key_size}/{value_size}: programs and header differ")


def _pin_dir(instance: str, pin_root) -> Path:
    return (Path(pin_root) if pin_root is not None else DEFAULT_PIN_BASE) / instance


def read_counters(instance: str, pin_root: str | os.PathLike | None = None):
    """The instance's counters (sums over CPUs), as Datapath.counters() returns them."""
    from lispctl.datapath.datapath import COUNTER_NAMES, DROP_REASONS, Counters
    cnt = header_enum("lisp_counter")
    with PinnedMap(_pin_dir(instance, pin_root) / "counters") as m:
        _check(m, "counters", 4, 8)
        if m.max_entries != cnt["LISP_CNT__MAX"]:
            raise DatapathError(f"pinned counters has {m.max_entries} entries, header says {cnt['LISP_CNT__MAX']}")

        def total(idx: int) -> int:
            vals = m.lookup(idx.to_bytes(4, sys.byteorder)) or []
            return sum(int.from_bytes(v, sys.byteorder) for v in vals)

        vals = {name: total(idx) for idx, name in COUNTER_NAMES.items() if name != "drop_base"}
        base = cnt["LISP_CNT_DROP_BASE"]
        drops = {name: total(base + r) for r, name in DROP_REASONS.items()}
    main = ("encapsulated", "decapsulated", "miss")
    return Counters(vals["encapsulated"], vals["decapsulated"], vals["miss"], drops,
                    {k: v for k, v in vals.items() if k not in main})


def read_mapping_stats(instance: str, pin_root: str | os.PathLike | None = None) -> dict[int, tuple[int, int]]:
    """{mapping id: (packets, inner bytes)} summed over CPUs (ids: Datapath.mappings()),
    with the counts still in flow-cache slots, as Datapath.mapping_counters."""
    fields = _struct_u64_fields("lisp_stats")
    pin = _pin_dir(instance, pin_root)
    with PinnedMap(pin / "map_stats") as m:
        _check(m, "map_stats", 4, 8 * len(fields))
        out: dict[int, list[int]] = {}
        since: dict[int, int] = {}
        for key in m.keys():
            per_cpu = m.lookup(key) or []
            sums = [sum(int.from_bytes(v[8 * i:8 * i + 8], sys.byteorder) for v in per_cpu) for i in range(len(fields))]
            rec = dict(zip(fields, sums))
            mid = int.from_bytes(key, sys.byteorder)
            out[mid] = [rec["packets"], rec["bytes"]]
            i = fields.index("since")
            since[mid] = int.from_bytes(per_cpu[0][8 * i:8 * i + 8], sys.byteorder) if per_cpu else 0
    add_slot_counts(out, since, slot_counts(pin))
    return {mid: (v[0], v[1]) for mid, v in out.items()}


def slot_counts(pin: Path):
    """(gen, mapping id, action, packets, bytes) of every flow-cache slot that
    counted packets, on every CPU, in each flow cache of the instance: the
    one pinned with its programs (prog-<key>/flow_cache) and those of
    programs a new build replaced (RETIRED_FLOW_CACHE: their slots still hold
    counts, prebuilt.py). Field offsets from each one's build layout; the
    values are read in batches and unpacked without a ctypes object per slot
    (the daemon asks every few seconds, and a cache is 4,096 sets per CPU)."""
    import json
    import struct

    from lispctl.datapath.maps import rebuild
    from lispctl.datapath.prebuilt import PREFIX, RETIRED_FLOW_CACHE, cache_dir
    caches = [(d / "flow_cache", d.name[len(PREFIX):]) for d in sorted(pin.glob(PREFIX + "*"))]
    caches += [(p, p.name[len(RETIRED_FLOW_CACHE):].split("-")[0])       # flow_cache-<key>-<map id>
               for p in sorted(pin.glob(RETIRED_FLOW_CACHE + "*"))]
    for path, key in caches:
        try:
            layouts = json.loads((cache_dir() / f"{key}.json").read_text())
            set_t = rebuild(layouts["maps"]["flow_cache"]["leaf"])
        except (OSError, ValueError, KeyError):
            continue
        if not path.exists():
            continue
        way = set_t.way
        slot_t = dict(set_t._fields_)["way"]._type_
        m_off = slot_t.m.offset
        mapping_t = dict(slot_t._fields_)["m"]
        fields = sorted([(way.offset + w * ctypes.sizeof(slot_t) + off, i, code)
                         for w in range(2)
                         for i, (off, code) in enumerate(((slot_t.gen.offset, "Q"), (m_off + mapping_t.id.offset, "I"),
                                                          (m_off + mapping_t.action.offset, "B"),
                                                          (slot_t.packets.offset, "Q"), (slot_t.bytes.offset, "Q")))])
        fmt, pos = "=", 0
        for off, _, code in fields:
            fmt += f"{off - pos}x{code}"
            pos = off + struct.calcsize("=" + code)
        with PinnedMap(path) as m:
            _check(m, "flow_cache", 4, ctypes.sizeof(set_t))
            stride = (m.value_size + 7) & ~7
            fmt += f"{stride - pos}x"
            unpack = struct.Struct(fmt).iter_unpack
            # the unpacked tuple is in offset order: way 0's five fields, then way 1's
            order = [i for _, i, _ in fields]
            idx = [order.index(i) for i in range(5)], [5 + order[5:].index(i) for i in range(5)]
            for raw in m.values_raw():
                for t in unpack(raw):
                    for ix in idx:
                        if t[ix[3]]:
                            yield t[ix[0]], t[ix[1]], t[ix[2]], t[ix[3]], t[ix[4]]


def add_slot_counts(out: dict[int, list[int]], since: dict[int, int], slots) -> None:
    """Add to out[id] = [packets, bytes] what flow-cache slots (slot_counts)
    counted for id and did not fold into map_stats yet: slots of an
    encapsulating entry filled under a generation >= since[id] (bpf/lisp_maps.h,
    struct lisp_stats). Ids without since are not asked."""
    for gen, mid, action, packets, nbytes in slots:
        if action == 0 and mid in since and gen >= since[mid]:        # LISP_ACT_NO_ACTION
            out[mid][0] += packets
            out[mid][1] += nbytes
