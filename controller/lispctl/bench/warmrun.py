"""The warm-path driver of bench_datapath_prog (warmrun.c): build, run, parse.

The Python loop that drives single BPF_PROG_TEST_RUN calls touches much
memory between two runs, so every map a program reads may have left the
CPU's caches by the next run (while a trivial program reads nothing): those
are cold-ish figures. warmrun.c runs the same single test runs back to back
from C, on one CPU, after an untimed pass over the packets: the warm path.
It is compiled at bench time with the system's C compiler (cc; scripts/setup.sh
installs gcc and libc6-dev); without one the warm columns are skipped.
"""
from __future__ import annotations

import shutil
import struct
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

SOURCE = Path(__file__).with_name("warmrun.c")


@dataclass(frozen=True)
class WarmResult:
    runs: int
    total_ns: int
    retvals: dict[int, int]     # program return value -> runs that returned it
    median_ns: int | None = None
    block_median_ns: float | None = None    # median of means of blocks of 100 runs (warmrun.c)

    @property
    def mean_ns(self) -> float:
        return self.total_ns / self.runs if self.runs else 0.0


def parse(text: str) -> WarmResult:
    """warmrun's output: `runs N`, `total_ns T`, `median_ns M` and
    `block_median_ns B` (optional), `retval R COUNT` lines.
    Raises ValueError on anything else, a missing line or counts that do not
    add up to the runs."""
    runs = total = median = None
    blocks: float | None = None
    retvals: dict[int, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "runs" and len(parts) == 2:
            runs = int(parts[1])
        elif parts[0] == "total_ns" and len(parts) == 2:
            total = int(parts[1])
        elif parts[0] == "median_ns" and len(parts) == 2:
            median = int(parts[1])
        elif parts[0] == "block_median_ns" and len(parts) == 2:
            blocks = float(parts[1])
        elif parts[0] == "retval" and len(parts) == 3:
            retvals[int(parts[1])] = retvals.get(int(parts[1]), 0) + int(parts[2])
        else:
            raise ValueError(f"warmrun: unexpected line {line!r}")
    if runs is None or total is None:
        raise ValueError("warmrun: output lacks runs or total_ns")
    if sum(retvals.values()) != runs:
        raise ValueError(f"warmrun: return values of {sum(retvals.values())} runs, expected {runs}")
    return WarmResult(runs, total, retvals, median, blocks)


def frames_file(frames: Sequence[bytes], ctxs: Sequence[bytes | None]) -> bytes:
    """The driver's input: per packet u32 data length, u32 context length,
    the data and the context (host byte order, as the driver reads them)."""
    out = bytearray()
    for data, ctx in zip(frames, ctxs, strict=True):
        c = ctx or b""
        out += struct.pack("=II", len(data), len(c)) + data + c
    return bytes(out)


def build(workdir: Path) -> Path | None:
    """Compile warmrun.c into workdir; None when there is no C compiler."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    exe = workdir / "warmrun"
    cp = subprocess.run([cc, "-O2", "-Wall", "-o", str(exe), str(SOURCE)], capture_output=True, text=True)
    if cp.returncode:
        raise RuntimeError(f"cc warmrun.c: {cp.stderr.strip()[:800]}")
    return exe


def run(exe: Path, prog_fd: int, frames: Sequence[bytes], ctxs: Sequence[bytes | None], runs: int,
        workdir: Path) -> WarmResult:
    """runs single test runs of prog_fd (inherited by the driver) over frames."""
    path = workdir / "frames.bin"
    path.write_bytes(frames_file(frames, ctxs))
    try:
        cp = subprocess.run([str(exe), str(prog_fd), str(runs), str(path)], pass_fds=(prog_fd,),
                            capture_output=True, text=True)
    finally:
        path.unlink(missing_ok=True)
    if cp.returncode:
        raise RuntimeError(f"warmrun: {cp.stderr.strip()[:500]}")
    return parse(cp.stdout)
