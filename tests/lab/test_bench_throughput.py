"""The throughput bench's pure parts (lispctl.bench.bench_throughput): what
the XDP programs did of a sample's LISP work, read from counter deltas, and
how a figure is classed against the sink. No lab."""
from __future__ import annotations

import pytest

from lispctl.bench import bench_throughput as bt


def _c(enc: int, dec: int, xenc: int = 0, xdec: int = 0, to_stack: int = 0) -> dict[str, int]:
    return {"encapsulated": enc, "decapsulated": dec, "xdp_encapsulated": xenc,
            "xdp_decapsulated": xdec, "xdp_to_stack": to_stack}


def test_xdp_work_is_the_share_of_the_deltas_over_both_xtrs():
    before = {"xtr1": _c(100, 10, 50, 5), "xtr2": _c(10, 100, 5, 50)}
    # between the reads: xtr1 encapsulates 1,000 (990 by XDP), decapsulates 20 (all XDP);
    # xtr2 encapsulates 20 (10 by XDP), decapsulates 1,000 (980 by XDP, 4 of them to the stack)
    after = {"xtr1": _c(1100, 30, 1040, 25), "xtr2": _c(30, 1100, 15, 1030, 4)}
    w = bt.xdp_work(before, after)
    assert w["xdp_itr_share"] == pytest.approx(1000 / 1020)
    assert w["xdp_etr_share"] == pytest.approx(1000 / 1020)
    assert w["xdp_to_stack_share"] == pytest.approx(4 / 1000)


def test_xdp_work_counts_nothing_done_by_tc_as_xdp():
    before = {"xtr1": _c(0, 0), "xtr2": _c(0, 0)}
    after = {"xtr1": _c(500, 0), "xtr2": _c(0, 500)}     # the tc programs did it all
    w = bt.xdp_work(before, after)
    assert w["xdp_itr_share"] == 0.0 and w["xdp_etr_share"] == 0.0
    assert min(w["xdp_itr_share"], w["xdp_etr_share"]) < bt.XDP_SHARE_MIN   # the sample would fail


def test_xdp_work_without_traffic_is_zero_not_an_error():
    c = {"xtr1": _c(7, 7, 7, 7), "xtr2": _c(7, 7, 7, 7)}
    assert bt.xdp_work(c, c) == {"xdp_itr_share": 0.0, "xdp_etr_share": 0.0, "xdp_to_stack_share": 0.0}


def test_bound_and_names():
    assert bt.bound(bt.GENERATOR_BOUND) == "generator"
    assert bt.bound(bt.GENERATOR_BOUND - 0.01) == "data path"
    assert bt.name_of("lisp-xdp") == "LISP-XDP" and bt.name_of("bpf-forward-xdp") == "bpf-forward-xdp"


def test_every_mode_is_reported_and_ratios_name_measured_modes():
    assert set(bt.ROW_ORDER) == set(bt.MODES)
    assert set(bt.XDP_PROGRAMS) <= set(bt.BPF_MODES) <= set(bt.MODES)
    for a, b in bt.MORE_RATIOS:
        assert a in bt.MODES and b in bt.MODES
    # the figures issue 13 asks for
    assert ("lisp-xdp", "plain") in bt.MORE_RATIOS and ("lisp-xdp", "bpf-forward-xdp") in bt.MORE_RATIOS
