"""Compile once, in a short-lived child; reuse pinned programs while they match.

bcc and LLVM cost ~200 MB resident and seconds of a core per compile, and a
daemon needs neither once the programs are loaded. So:

- The build key is a SHA-256 of the inlined BPF source, every compile flag
  (loader.build_cflags: pin root, kernel-feature probes, caller flags) and the
  kernel release.
- `open_datapath` looks for `<pin_dir>/prog-<key>/` holding every program and
  the maps the header does not pin (the miss ring buffer, the tail-call
  array), and for the layout file `<cache>/<key>.json`. If all are there and
  the pinned programs still use the instance's pinned maps, they are opened
  as they are: no compile, ready in milliseconds.
- Otherwise `python -m lispctl.datapath.prebuilt <pin_dir> <flags>` runs as a
  child: it compiles and loads with bcc, pins the programs and those maps
  under the new key, writes the layouts bcc derived from the program (ctypes
  Key/Leaf of each map and the miss event, as JSON) and exits, taking bcc
  and LLVM with it. Older `prog-*` directories of the instance are removed.

The parent opens everything through raw bpf(2) (maps.py).
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from lispctl.datapath.errors import DatapathError
from lispctl.datapath.loader import PROGRAMS, XDP_PROGRAMS, build_cflags, compile_bpf, inline_source
from lispctl.datapath.maps import RingBuffer, Table, obj_get, obj_info, obj_pin, prog_map_ids, rebuild, MapInfo

# Maps of bpf/lisp_maps.h the Python side uses (all pinned by the header).
MAPS = ("map_cache4", "map_cache6", "locsets", "local_eid4", "local_eid6", "local_rlocs",
        "accepted_iids", "eid_ifaces", "config", "miss_rl", "counters", "map_stats", "out_devs",
        "petr_accept4", "petr_accept6", "flow_gen", "nh_gen")
# Not pinned by the header (transient), pinned here next to the programs:
# the ring buffer so the daemon can read it, the prog array because its
# entries are cleared when the last user reference to it goes, the flow
# cache because its slots hold per-mapping counts not yet in map_stats
# (bpf/lisp_flowcache.h; its layout is written like those of MAPS).
PROG_MAPS = ("miss_events", "tail_progs", "flow_cache")
# A new build's programs get a flow cache of their own; the old one's slots
# still hold counts (and the old programs count there until they are
# replaced), so it stays pinned as <pin dir>/flow_cache-<old key>-<map id> for the
# readers (pinned.read_mapping_stats, Datapath.mapping_counters) until
# Datapath.reset() or close(unpin=True).
RETIRED_FLOW_CACHE = "flow_cache-"
LAYOUT_VERSION = "2"
PREFIX = "prog-"


def cache_dir() -> Path:
    """Where build layouts live: a tmpfs (pinned programs do not outlive a boot either)."""
    if os.environ.get("LISPCTL_BPF_CACHE"):
        return Path(os.environ["LISPCTL_BPF_CACHE"])
    return Path(os.environ.get("LISPCTL_RUN_DIR", "/run/lispctl")) / "bpf"


def build_key(pin_dir: Path, extra_cflags: tuple[str, ...] = ()) -> str:
    h = hashlib.sha256()
    for part in (LAYOUT_VERSION, inline_source(), *build_cflags(pin_dir, extra_cflags), platform.release()):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:32]


@dataclass
class Loaded:
    key: str
    compiled: bool                     # False: reused pinned programs
    progs: dict[str, int]              # name -> fd
    tables: dict[str, Table]
    ring_fd: int
    event_type: type[ctypes.Structure]

    def close(self) -> None:
        for fd in self.progs.values():
            os.close(fd)
        self.progs.clear()
        for t in self.tables.values():
            t.close()
        self.tables.clear()
        if self.ring_fd >= 0:
            os.close(self.ring_fd)
            self.ring_fd = -1

    def ring(self, callback) -> RingBuffer:
        return RingBuffer(self.ring_fd, callback)


def open_datapath(pin_dir: Path, extra_cflags: tuple[str, ...] = ()) -> Loaded:
    key = build_key(pin_dir, extra_cflags)
    loaded = _try_open(pin_dir, key)
    if loaded is not None:
        return loaded
    _build_in_child(pin_dir, extra_cflags)
    loaded = _try_open(pin_dir, key, compiled=True)
    if loaded is None:
        raise DatapathError(f"the BPF build child finished but {pin_dir / (PREFIX + key)} is incomplete")
    return loaded


def forget_layout(key: str) -> None:
    """The instance's pins are gone: its layout file is of no further use."""
    (cache_dir() / f"{key}.json").unlink(missing_ok=True)


def _try_open(pin_dir: Path, key: str, compiled: bool = False) -> Loaded | None:
    prog_dir = pin_dir / f"{PREFIX}{key}"
    layout_file = cache_dir() / f"{key}.json"
    names = (*PROGRAMS, *XDP_PROGRAMS)
    if not prog_dir.is_dir() or not layout_file.is_file() \
            or not all((prog_dir / n).exists() for n in (*names, *PROG_MAPS)) \
            or not all((pin_dir / m).exists() for m in MAPS):
        return None
    try:
        layouts = json.loads(layout_file.read_text())
    except (OSError, ValueError):
        return None
    fds: list[int] = []
    try:
        progs = {n: obj_get(str(prog_dir / n)) for n in names}
        fds += progs.values()
        used = set().union(*(prog_map_ids(fd) for fd in progs.values()))
        tables = {}
        for m in MAPS:
            fd = obj_get(str(pin_dir / m))
            fds.append(fd)
            info = MapInfo()
            obj_info(fd, info)
            if info.id not in used:
                raise LookupError(m)          # programs of an older set of maps
            lay = layouts["maps"][m]
            tables[m] = Table(fd, rebuild(lay["key"]), rebuild(lay["leaf"]), m)
        ring_fd = obj_get(str(prog_dir / "miss_events"))
        fds.append(ring_fd)
        return Loaded(key, compiled, progs, tables, ring_fd, rebuild(layouts["event"]))
    except (OSError, LookupError, KeyError, DatapathError):
        for fd in fds:
            os.close(fd)
        return None


def _build_in_child(pin_dir: Path, extra_cflags: tuple[str, ...]) -> None:
    env = dict(os.environ)
    pkg_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run([sys.executable, "-m", "lispctl.datapath.prebuilt", str(pin_dir),
                           json.dumps(list(extra_cflags))], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        msg = proc.stderr.strip().splitlines()
        tail = [ln for ln in msg if ln.startswith("DatapathError: ")]
        raise DatapathError(tail[-1][len("DatapathError: "):].replace("\\n", "\n") if tail
                            else "BPF build child failed: " + "\n".join(msg[-8:]))


def build(pin_dir: Path, extra_cflags: tuple[str, ...]) -> None:
    """In the child: compile, load, pin, write the layouts."""
    from lispctl.datapath.maps import describe
    key = build_key(pin_dir, extra_cflags)
    bpf, fns = compile_bpf(pin_dir, extra_cflags)
    prog_dir = pin_dir / f"{PREFIX}{key}"
    shutil.rmtree(prog_dir, ignore_errors=True)
    prog_dir.mkdir(parents=True)
    for name, fn in fns.items():
        obj_pin(fn.fd, str(prog_dir / name))
    for m in PROG_MAPS:
        obj_pin(bpf[m.encode()].map_fd, str(prog_dir / m))
    layouts: dict = {"maps": {}}
    for m in (*MAPS, "flow_cache"):
        t = bpf[m.encode()]
        layouts["maps"][m] = {"key": describe(t.Key), "leaf": describe(getattr(t, "sLeaf", t.Leaf))}
    ring = bpf[b"miss_events"]
    scratch = ctypes.create_string_buffer(4096)
    layouts["event"] = describe(type(ring.event(ctypes.addressof(scratch))))
    out = cache_dir()
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{key}.{os.getpid()}"
    tmp.write_text(json.dumps(layouts))
    tmp.rename(out / f"{key}.json")
    for old in pin_dir.glob(f"{PREFIX}*"):
        if old != prog_dir:
            if (old / "flow_cache").exists():     # pinned again (bpffs names have no dots, and no renames across directories)
                fd = obj_get(str(old / "flow_cache"))
                try:
                    info = MapInfo()
                    obj_info(fd, info)
                    obj_pin(fd, str(pin_dir / f"{RETIRED_FLOW_CACHE}{old.name[len(PREFIX):]}-{info.id}"))
                finally:
                    os.close(fd)
            shutil.rmtree(old, ignore_errors=True)


def main(argv: list[str]) -> int:
    try:
        build(Path(argv[0]), tuple(json.loads(argv[1]) if len(argv) > 1 else ()))
    except DatapathError as exc:
        print("DatapathError: " + str(exc).replace("\n", "\\n"), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
