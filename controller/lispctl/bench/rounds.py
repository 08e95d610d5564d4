"""Interleaved rounds on a quiet machine, and their medians.

The benchmarks that compare modes (one lab a mode, all built at the start)
take one sample of every mode a round, in an order that rotates by one each
round, so drift over the run hits all modes alike. Each figure is the median
of the rounds, reported with its min-max range, and modes are compared by
the ratio of their medians (a single sample on 2 shared cores can swing by
2x). Another program's load would decide a sample rather than the data path,
so each sample waits for a quiet machine first and is taken again, once, if
the machine was busy right after it.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, TypeVar

from . import Recorder

# Between samples nothing of ours runs: more CPU use than this is someone else's.
QUIET_BUSY, QUIET_PATIENCE, QUIET_WINDOW = 0.10, 30.0, 0.5

L = TypeVar("L")


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]  # idle + iowait
    return sum(v) - idle, sum(v)


class Quiet:
    """Waits for a quiet machine; `waited` sums the seconds spent beyond one
    window each time (that is, waiting out someone else's load)."""

    def __init__(self, sampler: Callable[[], tuple[int, int]] = cpu_times,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                 limit: float = QUIET_BUSY, window: float = QUIET_WINDOW) -> None:
        self.sampler, self.sleep, self.clock = sampler, sleep, clock
        self.limit, self.window = limit, window
        self.waited = 0.0

    def busy(self) -> float:
        """The busy fraction of all CPUs over one window."""
        b0, t0 = self.sampler()
        self.sleep(self.window)
        b1, t1 = self.sampler()
        return (b1 - b0) / max(t1 - t0, 1)

    def wait(self, patience: float = QUIET_PATIENCE) -> float:
        """Wait until a window is quiet; returns the busy fraction of the last
        window (above `limit`: gave up after `patience` s)."""
        start = self.clock()
        deadline = start + patience
        said = False
        while True:
            busy = self.busy()
            if busy <= self.limit or self.clock() > deadline:
                self.waited += max(0.0, self.clock() - start - self.window)
                return busy
            if not said:
                print(f"  machine busy ({busy:.0%}), waiting up to {patience:.0f} s")
                said = True


def rotation(modes: Sequence[str], rounds: int) -> Iterator[tuple[int, str]]:
    """(round, mode) in sampling order: every mode once a round, the order
    rotating by one each round."""
    order = list(modes)
    for r in range(rounds if order else 0):
        k = r % len(order)
        yield from ((r, mode) for mode in order[k:] + order[:k])


def build(modes: Iterable[str], make: Callable[[str], L], errors: dict[str, str]) -> dict[str, L]:
    """make(mode) for every mode; a mode that fails goes to `errors` and the
    others are still measured."""
    labs: dict[str, L] = {}
    for mode in modes:
        try:
            labs[mode] = make(mode)
        except Exception as exc:
            errors[mode] = repr(exc)
            print(f"  {mode} failed: {exc!r}")
    return labs


@dataclass
class Taken:
    samples: dict[str, list[dict[str, float]]]
    noisy: list[str] = field(default_factory=list)    # samples kept although the machine was busy
    seconds: float = 0.0                               # time spent sampling, retakes included
    count: int = 0                                     # samples taken, retakes included


def interleave(labs: Mapping[str, L], sample: Callable[[str, L], dict[str, float]], rounds: int,
               quiet: Quiet, errors: dict[str, str]) -> Taken:
    """`rounds` samples of every lab, interleaved; a mode whose sample fails
    goes to `errors` and is not sampled again."""
    taken = Taken({mode: [] for mode in labs})
    for r, mode in rotation(list(labs), rounds):
        if mode in errors:
            continue
        try:
            # Load that starts during a sample shows right after it (others'
            # test runs last longer than a sample): such a sample is taken
            # again, once.
            for _attempt in range(2):
                before = quiet.wait()
                print(f"  -- round {r + 1} {mode} (before: {before:.0%} busy)")
                t0 = quiet.clock()
                s = sample(mode, labs[mode])
                taken.seconds += quiet.clock() - t0
                taken.count += 1
                after = quiet.wait(patience=0)
                if max(before, after) <= quiet.limit:
                    break
                print(f"  machine busy around the sample ({before:.0%}/{after:.0%})")
            else:
                taken.noisy.append(f"round {r + 1} {mode} ({before:.0%} before, {after:.0%} after)")
            taken.samples[mode].append(s)
        except Exception as exc:
            errors[mode] = repr(exc)
            print(f"  {mode} failed: {exc!r}")
    return taken


class Stat(NamedTuple):
    median: float
    lo: float
    hi: float


def summarise(samples: Sequence[Mapping[str, float]], keys: Iterable[str]) -> dict[str, Stat]:
    """Median and min-max of each key over the samples (at least one)."""
    out = {}
    for k in keys:
        vs = [s[k] for s in samples]
        out[k] = Stat(statistics.median(vs), min(vs), max(vs))
    return out


def record(rec: Recorder, prefix: str, stats: Mapping[str, Stat], digits: int) -> None:
    """Figures {prefix}_{key} (the median), and its _min and _max."""
    for k, st in stats.items():
        rec.figure(f"{prefix}_{k}", round(st.median, digits))
        rec.figure(f"{prefix}_{k}_min", round(st.lo, digits))
        rec.figure(f"{prefix}_{k}_max", round(st.hi, digits))


def ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


def short(key: str) -> str:
    """A figure key without its unit, to name a ratio of it."""
    return key.replace("_gbit_per_s", "").replace("_delivered_pps", "")


# -- markdown ---------------------------------------------------------------------
def cell(key: str, st: Stat, digits: int = 1) -> str:
    """'median (min-max)': packet rates (keys ending in pps) in whole packets
    with thousands separators, the rest with `digits` decimals."""
    if key.endswith("pps"):
        return f"{st.median:,.0f} ({st.lo:,.0f}-{st.hi:,.0f})"
    return f"{st.median:.{digits}f} ({st.lo:.{digits}f}-{st.hi:.{digits}f})"


def header(first: str, columns: Sequence[str]) -> list[str]:
    """A table's header and alignment lines: `first` left, the columns right."""
    return [f"| {first} | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]


def row(name: str, cells: Iterable[str]) -> str:
    return f"| {name} | " + " | ".join(cells) + " |"


def ratio_row(name: str, ratios: Iterable[float]) -> str:
    return row(name, (f"{v:.2f}" for v in ratios))


def failed_row(name: str, columns: int) -> str:
    return f"| {name} | failed |" + " |" * (columns - 1)


def busy_note(noisy: Sequence[str]) -> str:
    return (f"**Samples taken on a busy machine:** {', '.join(noisy)}." if noisy
            else "Every sample started on a quiet machine.")


def report_errors(rec: Recorder, errors: Mapping[str, str]) -> None:
    """A note for each failure, then raise if there was any (the figures
    recorded so far are still saved)."""
    for what, err in errors.items():
        rec.note(f"\n{what} failed: `{err}`")
    if errors:
        raise RuntimeError(f"failed: {', '.join(errors)}")
