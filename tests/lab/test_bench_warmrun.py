"""The warm-path driver of the BPF_PROG_TEST_RUN benchmark (lispctl.bench.warmrun).

Its output parser and input format are pure logic; the driver itself is
compiled and run on a trivial tc and XDP program, so the figures the
benchmark reports come from runs that really took place.
"""
from __future__ import annotations

import shutil
import struct

import pytest

from lispctl.bench import warmrun
from tests.conftest import need_root, unavailable


def test_parse_sums_and_mean() -> None:
    r = warmrun.parse("runs 4\ntotal_ns 1000\nmedian_ns 240\nretval 7 3\nretval 2 1\n")
    assert (r.runs, r.total_ns, r.median_ns) == (4, 1000, 240)
    assert r.retvals == {7: 3, 2: 1}
    assert r.mean_ns == 250.0


def test_parse_medians_are_optional() -> None:
    r = warmrun.parse("runs 2\ntotal_ns 10\nretval 0 2\n")
    assert r.median_ns is None and r.block_median_ns is None and r.mean_ns == 5.0
    r = warmrun.parse("runs 2\ntotal_ns 10\nblock_median_ns 4.50\nretval 0 2\n")
    assert r.block_median_ns == 4.5


@pytest.mark.parametrize("text", [
    "",                                            # nothing
    "runs 2\nretval 0 2\n",                        # no total
    "total_ns 5\nretval 0 2\n",                    # no runs
    "runs 2\ntotal_ns 5\nretval 0 1\n",            # return values of 1 run, not 2
    "runs 1\ntotal_ns 5\nretval 0 1\nwarm 3\n",    # unknown line
    "runs x\ntotal_ns 5\nretval 0 1\n",            # not a number
    "runs 1 2\ntotal_ns 5\nretval 0 1\n",          # extra field
])
def test_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        warmrun.parse(text)


def test_frames_file_layout() -> None:
    out = warmrun.frames_file([b"abc", b"de"], [None, b"\x01\x02\x03\x04"])
    assert out == struct.pack("=II", 3, 0) + b"abc" + struct.pack("=II", 2, 4) + b"de" + b"\x01\x02\x03\x04"
    with pytest.raises(ValueError):
        warmrun.frames_file([b"a"], [])


def test_driver_runs_programs(tmp_path) -> None:
    """The compiled driver runs a tc and an XDP program the number of times
    asked, cycling over the packets, and reports what they returned."""
    need_root()
    exe = warmrun.build(tmp_path)
    if exe is None:
        unavailable("no C compiler (cc): scripts/setup.sh installs gcc")
    from bcc import BPF

    from lispctl.datapath.testrun import XDP_PASS, xdp_ctx
    b = BPF(text=b"int ok(struct __sk_buff *skb) { return skb->len == 60 ? 1 : 0; }\n"
                 b"int xpass(struct xdp_md *ctx) { return XDP_PASS; }")
    try:
        tc, xdp = b.load_func(b"ok", BPF.SCHED_CLS).fd, b.load_func(b"xpass", BPF.XDP).fd
        frames = [bytes(60), bytes(64), bytes(64)]
        r = warmrun.run(exe, tc, frames, [None] * 3, 300, tmp_path)
        assert r.runs == 300 and r.retvals == {1: 100, 0: 200}
        assert r.total_ns > 0 and r.median_ns is not None and r.median_ns > 0
        # 3 blocks of 100 runs: their median mean is one of them, so no more than all 300 runs took
        assert r.block_median_ns is not None and 0 < r.block_median_ns <= r.total_ns / 100
        r = warmrun.run(exe, xdp, frames, [xdp_ctx(len(f)) for f in frames], 50, tmp_path)
        assert r.retvals == {XDP_PASS: 50}
        assert not (tmp_path / "frames.bin").exists()
    finally:
        b.cleanup()


def test_build_without_compiler(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert warmrun.build(tmp_path) is None
