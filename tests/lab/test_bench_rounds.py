"""The benchmarks' shared sampling and summary (lispctl.bench.rounds).

Pure logic, no lab: the CPU sampler, sleep and clock of the quiet-machine
wait are injected, so each decision (wait, give up, retake, keep a busy
sample and say so) is checked against a scripted machine load.
"""
from __future__ import annotations

import pytest

from lispctl.bench import Recorder
from lispctl.bench import rounds as rd


class Machine:
    """A scripted machine: the busy fraction of each successive window
    (then `rest` for ever), on a clock that moves only when slept on."""

    def __init__(self, busy: list[float], rest: float = 0.0) -> None:
        self.script, self.rest = list(busy), rest
        self.now = 0.0
        self.jiffies = [0, 0]   # busy, total
        self.reads = 0

    def sampler(self) -> tuple[int, int]:
        # A window is two reads; its load shows in the second.
        self.reads += 1
        if self.reads % 2 == 0:
            frac = self.script.pop(0) if self.script else self.rest
            self.jiffies[0] += round(frac * 1000)
            self.jiffies[1] += 1000
        return self.jiffies[0], self.jiffies[1]

    def sleep(self, s: float) -> None:
        self.now += s

    def clock(self) -> float:
        return self.now

    def quiet(self, **kw) -> rd.Quiet:
        return rd.Quiet(sampler=self.sampler, sleep=self.sleep, clock=self.clock, **kw)


def test_wait_returns_at_once_on_a_quiet_machine():
    m = Machine([0.05])
    q = m.quiet()
    assert q.wait() == pytest.approx(0.05)
    assert m.now == pytest.approx(rd.QUIET_WINDOW)
    assert q.waited == 0.0


def test_wait_waits_out_load_and_counts_the_time():
    m = Machine([0.9, 0.5, 0.2, 0.03])
    q = m.quiet()
    assert q.wait() == pytest.approx(0.03)
    assert m.now == pytest.approx(4 * rd.QUIET_WINDOW)
    # everything beyond the one window a quiet machine needs is someone else's load
    assert q.waited == pytest.approx(3 * rd.QUIET_WINDOW)


def test_wait_gives_up_after_its_patience():
    m = Machine([], rest=0.8)
    q = m.quiet()
    assert q.wait(patience=2.0) == pytest.approx(0.8)
    # windows of 0.5 s until the clock is past the deadline
    assert 2.0 < m.now <= 2.0 + rd.QUIET_WINDOW
    assert q.wait(patience=0) == pytest.approx(0.8)   # a single window: the check after a sample


def test_rotation_rotates_the_order_each_round():
    assert list(rd.rotation(["a", "b", "c"], 4)) == [
        (0, "a"), (0, "b"), (0, "c"),
        (1, "b"), (1, "c"), (1, "a"),
        (2, "c"), (2, "a"), (2, "b"),
        (3, "a"), (3, "b"), (3, "c")]
    assert list(rd.rotation([], 3)) == []


def test_build_keeps_the_modes_that_build():
    errors: dict[str, str] = {}

    def make(mode: str) -> str:
        if mode == "bad":
            raise RuntimeError("no lab")
        return f"lab-{mode}"
    assert rd.build(["a", "bad", "c"], make, errors) == {"a": "lab-a", "c": "lab-c"}
    assert errors == {"bad": "RuntimeError('no lab')"}


def sampler_of(calls: list[str], fail: str | None = None):
    def sample(mode: str, lab: str) -> dict[str, float]:
        calls.append(mode)
        if mode == fail:
            raise RuntimeError("sample broke")
        return {"x": float(len(calls)), "lab": float(lab == f"lab-{mode}")}
    return sample


def test_interleave_samples_every_mode_every_round():
    calls: list[str] = []
    errors: dict[str, str] = {}
    labs = {"a": "lab-a", "b": "lab-b"}
    taken = rd.interleave(labs, sampler_of(calls), 3, Machine([]).quiet(), errors)
    assert calls == ["a", "b", "b", "a", "a", "b"]
    assert taken.samples == {"a": [{"x": 1.0, "lab": 1.0}, {"x": 4.0, "lab": 1.0}, {"x": 5.0, "lab": 1.0}],
                             "b": [{"x": 2.0, "lab": 1.0}, {"x": 3.0, "lab": 1.0}, {"x": 6.0, "lab": 1.0}]}
    assert (taken.noisy, taken.count, errors) == ([], 6, {})


def test_interleave_retakes_a_sample_the_machine_was_busy_after():
    calls: list[str] = []
    # windows: before a (quiet), after a (busy: retake), before a, after a (quiet)
    taken = rd.interleave({"a": "lab-a"}, sampler_of(calls), 1, Machine([0.0, 0.6, 0.0, 0.0]).quiet(), {})
    assert calls == ["a", "a"]
    assert taken.samples["a"] == [{"x": 2.0, "lab": 1.0}]   # the retake is kept, not the busy one
    assert taken.noisy == [] and taken.count == 2


def test_interleave_keeps_a_busy_retake_and_says_so():
    calls: list[str] = []
    taken = rd.interleave({"a": "lab-a"}, sampler_of(calls), 1, Machine([0.0, 0.6, 0.0, 0.7]).quiet(), {})
    assert calls == ["a", "a"]
    assert taken.samples["a"] == [{"x": 2.0, "lab": 1.0}]
    assert taken.noisy == ["round 1 a (0% before, 70% after)"]
    assert "round 1 a" in rd.busy_note(taken.noisy)
    assert rd.busy_note([]) == "Every sample started on a quiet machine."


def test_interleave_stops_sampling_a_mode_that_failed():
    calls: list[str] = []
    errors: dict[str, str] = {}
    taken = rd.interleave({"a": "lab-a", "b": "lab-b"}, sampler_of(calls, fail="a"), 3, Machine([]).quiet(), errors)
    assert calls == ["a", "b", "b", "b"]
    assert errors == {"a": "RuntimeError('sample broke')"}
    assert taken.samples["a"] == [] and len(taken.samples["b"]) == 3


def test_summarise_gives_median_and_range():
    st = rd.summarise([{"k": 3.0, "j": 1.0}, {"k": 1.0, "j": 1.0}, {"k": 10.0, "j": 4.0}, {"k": 2.0, "j": 2.0}],
                      ["k", "j"])
    assert st == {"k": rd.Stat(2.5, 1.0, 10.0), "j": rd.Stat(1.5, 1.0, 4.0)}


def test_record_writes_median_min_and_max():
    rec = Recorder("test")
    rd.record(rec, "t_lisp", {"tcp4_gbit_per_s": rd.Stat(9.87654, 9.1, 10.12345)}, 3)
    assert rec.figures == {"t_lisp_tcp4_gbit_per_s": 9.877, "t_lisp_tcp4_gbit_per_s_min": 9.1,
                           "t_lisp_tcp4_gbit_per_s_max": 10.123}


def test_cells_ratios_and_rows():
    assert rd.cell("udp64_delivered_pps", rd.Stat(1234567.4, 1000000.0, 2000000.6)) == \
        "1,234,567 (1,000,000-2,000,001)"
    assert rd.cell("tcp4_gbit_per_s", rd.Stat(9.87, 9.04, 10.0)) == "9.9 (9.0-10.0)"
    assert rd.cell("tcp4_gbit_per_s", rd.Stat(9.87, 9.04, 10.0), 2) == "9.87 (9.04-10.00)"
    assert rd.ratio(3.0, 4.0) == 0.75
    assert rd.ratio(3.0, 0.0) == 0.0           # a reference that measured nothing
    assert rd.short("udp64_multi_delivered_pps") == "udp64_multi"
    assert rd.short("tcp6_gbit_per_s") == "tcp6"
    assert rd.header("mode", ["A", "B"]) == ["| mode | A | B |", "|---|---:|---:|"]
    assert rd.row("lisp", ["1", "2"]) == "| lisp | 1 | 2 |"
    assert rd.ratio_row("LISP / plain", [0.904, 1.0]) == "| LISP / plain | 0.90 | 1.00 |"
    assert rd.failed_row("vxlan", 3) == "| vxlan | failed | | |"


def test_report_errors_notes_each_and_raises():
    rec = Recorder("test")
    rd.report_errors(rec, {})
    assert rec.lines == []
    with pytest.raises(RuntimeError, match="failed: a, first_packet"):
        rd.report_errors(rec, {"a": "boom", "first_packet": "late"})
    assert rec.lines == ["\na failed: `boom`", "\nfirst_packet failed: `late`"]


@pytest.mark.parametrize("name", ["bench_throughput", "bench_nat_throughput", "bench_interworking"])
def test_benches_using_rounds_import(name):
    import importlib
    mod = importlib.import_module(f"lispctl.bench.{name}")
    assert callable(mod.run) and mod.SECTION
