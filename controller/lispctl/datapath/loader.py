"""Compile bpf/ with bcc and read back what the header defines.

bcc rewrites map accesses (`map.lookup(&k)`) only in the main translation
unit, so local `#include "lisp_*.h"` lines are inlined textually before
compiling. Enum values are parsed from bpf/lisp_maps.h, so Python never holds
a second copy of them.
"""
from __future__ import annotations

import os
import re
import tempfile
from functools import lru_cache
from pathlib import Path

from lispctl.datapath.errors import DatapathError
from lispctl.datapath.probe import kernel_features

BPF_DIR = Path(__file__).resolve().parents[3] / "bpf"
MAIN_SOURCE = "lisp_datapath.c"
MAPS_HEADER = "lisp_maps.h"
# tc (SCHED_CLS); lisp_itr_route and lisp_itr_encap are only tail-called (tail_progs)
PROGRAMS = ("lisp_itr_ingress", "lisp_itr_egress", "lisp_etr_ingress", "lisp_itr_route", "lisp_itr_encap")
XDP_PROGRAMS = ("lisp_etr_xdp", "lisp_itr_xdp")

_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"\s*$', re.M)


def bpf_dir() -> Path:
    override = os.environ.get("LISPCTL_BPF_DIR")
    return Path(override) if override else BPF_DIR


def inline_source(name: str = MAIN_SOURCE, seen: set[str] | None = None) -> str:
    seen = set() if seen is None else seen
    path = bpf_dir() / name
    try:
        text = path.read_text()
    except OSError as exc:
        raise DatapathError(f"cannot read BPF source {path}: {exc}") from exc

    def repl(m: re.Match) -> str:
        inc = m.group(1)
        if inc in seen:
            return ""
        seen.add(inc)
        return f"/* ---- {inc} ---- */\n" + inline_source(inc, seen)

    return _INCLUDE.sub(repl, text)


@lru_cache(maxsize=4)
def _header(bpf: Path, comments: bool) -> str:
    """lisp_maps.h, read once per start (a dozen constants come from it)."""
    text = (bpf / MAPS_HEADER).read_text()
    return text if comments else re.sub(r"/\*.*?\*/", "", text, flags=re.S)


@lru_cache(maxsize=None)
def header_enum(enum_name: str) -> dict[str, int]:
    """{'LISP_DROP_MALFORMED': 0, ...} for `enum <enum_name>` in lisp_maps.h."""
    text = _header(bpf_dir(), comments=False)
    m = re.search(r"enum\s+" + re.escape(enum_name) + r"\s*\{(.*?)\}", text, re.S)
    if not m:
        raise DatapathError(f"enum {enum_name} not found in {MAPS_HEADER}")
    values: dict[str, int] = {}
    for item in m.group(1).split(","):
        item = item.strip()
        if not item:
            continue
        name, _, val = item.partition("=")
        values[name.strip()] = int(val.strip(), 0)
    return values


@lru_cache(maxsize=None)
def header_define(name: str) -> int:
    text = _header(bpf_dir(), comments=True)
    m = re.search(r"^#define\s+" + re.escape(name) + r"\s+(\w+)", text, re.M)
    if not m:
        raise DatapathError(f"#define {name} not found in {MAPS_HEADER}")
    return int(m.group(1), 0)


def build_cflags(pin_dir: Path, extra_cflags: tuple[str, ...] = ()) -> list[str]:
    """Every flag the programs are compiled with: what they are loaded with
    depends on nothing else (with the source), so prebuilt.py keys reuse on it."""
    # What the kernel supports (bpf/lisp_compat.h, lispctl.datapath.probe); a
    # -D in extra_cflags overrides the probe (tests force older kernels' path).
    given = {f.split("=", 1)[0] for f in extra_cflags if f.startswith("-D")}
    probed = [f for f in kernel_features().cflags() if f.split("=", 1)[0] not in given]
    return [f'-DLISP_PIN_ROOT="{pin_dir}"', "-Wno-unused-function", *probed, *extra_cflags]


def compile_bpf(pin_dir: Path, extra_cflags: tuple[str, ...] = ()):
    """Load the programs with maps pinned in pin_dir; returns the bcc BPF object.

    Compiler diagnostics go to fd 2 from C++, not to sys.stderr, so fd 2 is
    captured while compiling and its first error lines go into the exception.
    """
    try:
        from bcc import BPF
    except ImportError as exc:
        raise DatapathError("bcc is not importable (install python3-bpfcc and use a venv with "
                            "--system-site-packages)") from exc
    text = inline_source()
    cflags = build_cflags(pin_dir, extra_cflags)
    # A named file, not an anonymous one: LLVM exit()s on some errors (stack
    # limit), and then this file is the only place the reason survives.
    log_path = Path(tempfile.gettempdir()) / f"lispctl-bpf-compile-{os.getpid()}.log"
    with open(log_path, "w+b") as errf:
        saved = os.dup(2)
        os.dup2(errf.fileno(), 2)
        try:
            bpf = BPF(text=text.encode(), cflags=cflags)
            fns = {name: bpf.load_func(name.encode(), BPF.SCHED_CLS) for name in PROGRAMS}
            fns.update({name: bpf.load_func(name.encode(), BPF.XDP) for name in XDP_PROGRAMS})
            import ctypes
            tail = bpf[b"tail_progs"]
            tail[ctypes.c_int(header_define("LISP_TAIL_ITR"))] = ctypes.c_int(fns["lisp_itr_ingress"].fd)
            tail[ctypes.c_int(header_define("LISP_TAIL_ENCAP"))] = ctypes.c_int(fns["lisp_itr_encap"].fd)
            tail[ctypes.c_int(header_define("LISP_TAIL_ROUTE"))] = ctypes.c_int(fns["lisp_itr_route"].fd)
        except (Exception, SystemExit) as exc:  # bcc raises bare Exception, or exits
            os.dup2(saved, 2)
            errf.seek(0)
            log = errf.read().decode(errors="replace")
            lines = [ln for ln in log.splitlines() if "error" in ln.lower()] or log.splitlines()
            first = "\n".join(lines[:8])
            hint = ""
            if "No such file" in log and "linux/" in log:
                hint = " (kernel headers missing: install linux-headers for the running kernel)"
            log_path.unlink(missing_ok=True)
            raise DatapathError(f"BPF compile/load failed: {exc}{hint}\n{first}") from exc
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    log_path.unlink(missing_ok=True)
    return bpf, fns
