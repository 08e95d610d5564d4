"""The round arithmetic of the BPF_PROG_TEST_RUN benchmark
(lispctl.bench.bench_datapath_prog): schedule, per-round samples, medians and
per-round ratios. Pure logic, no kernel: a scripted machine whose speed
changes from round to round stands in for the test runs.
"""
from __future__ import annotations

import pytest

from lispctl.bench import Recorder
from lispctl.bench import bench_datapath_prog as dp

ROWS = [("trivial_tc", 1), ("encap", 1), ("decap", 1), ("encap", 1000)]
COST = {("trivial_tc", 1): 100.0, ("encap", 1): 300.0, ("decap", 1): 200.0, ("encap", 1000): 450.0}
# the machine's speed in each round: drift of +-40% between rounds
SPEED = [1.0, 1.4, 0.6, 1.3, 0.7]


def scripted(rows=ROWS, speed=SPEED):
    """Passes for take() (cold, then warm): each call costs COST x the speed
    of the round the call falls in (every pass measures each row once a round)."""
    calls: list[tuple[str, tuple[str, int]]] = []

    def cold(row):
        calls.append(("cold", row))
        r = (len(calls) - 1) // (2 * len(rows))
        return {"cold": COST[row] * speed[r]}

    def warm(row):
        calls.append(("warm", row))
        r = (len(calls) - 1) // (2 * len(rows))
        return {"warm": COST[row] * speed[r] / 2, "warm_mean": COST[row] * speed[r]}
    return [cold, warm], calls


def test_orders_measure_every_row_once_a_round_in_changing_orders():
    orders = list(dp.orders(dp.ROWS, 7))
    assert len(orders) == 7
    for order in orders:
        assert sorted(order) == sorted(dp.ROWS)
    assert len({tuple(o) for o in orders}) == 7
    # no row is always preceded by the same other row
    for row in dp.ROWS:
        before = {o[o.index(row) - 1] if o.index(row) else None for o in orders}
        assert len(before) > 1, row
    # the same orders on every run (figures comparable between runs)
    assert orders == list(dp.orders(dp.ROWS, 7))


def test_take_makes_a_pass_per_way_a_round_and_indexes_samples_by_round():
    passes, calls = scripted()
    got = dp.take(ROWS, len(SPEED), passes)
    n = len(ROWS)
    assert len(calls) == 2 * n * len(SPEED)
    for r, order in enumerate(dp.orders(ROWS, len(SPEED))):
        # a round: all rows cold, then all rows warm, in the round's order
        assert calls[2 * n * r: 2 * n * (r + 1)] == [("cold", row) for row in order] + [("warm", row) for row in order]
    for row in ROWS:
        assert got["cold"][row] == pytest.approx([COST[row] * s for s in SPEED])
        assert got["warm"][row] == pytest.approx([COST[row] * s / 2 for s in SPEED])
        assert got["warm_mean"][row] == pytest.approx([COST[row] * s for s in SPEED])


def test_ratio_is_per_round_so_drift_between_rounds_cancels():
    passes, _ = scripted()
    t = dp.Table({1001: dp.take(ROWS, len(SPEED), passes)["cold"]})
    # the figures carry the drift ...
    st = t.ns(("encap", 1), 1001)
    assert (st.median, st.lo, st.hi) == pytest.approx((300.0, 180.0, 420.0))
    # ... the ratios do not: every round says 3.00
    x = t.x(("encap", 1), ("trivial_tc", 1), 1001)
    assert (x.median, x.lo, x.hi) == pytest.approx((3.0, 3.0, 3.0))


def test_ratio_is_the_median_of_per_round_ratios_not_a_ratio_of_medians():
    row, trivial = [100.0, 300.0, 200.0], [100.0, 100.0, 50.0]
    # per round 1, 3, 4: median 3. Across rounds it would say 2: the medians
    # 200 / 100, or each row's samples sorted (2, 2, 3).
    assert dp.ratio(row, trivial) == pytest.approx(dp.Stat(3.0, 1.0, 4.0))
    with pytest.raises(ValueError):
        dp.ratio(row, trivial[:2])


def test_a_round_without_a_sample_is_an_error():
    with pytest.raises(ValueError):
        dp.stat([1.0, float("nan")])
    with pytest.raises(ValueError):
        dp.stat([])


def test_ratios_compare_rows_of_the_same_size_rounds():
    """The trivial program is measured in each map-cache size's rounds: a
    large-size ratio divides by the large rounds' trivial, not the small's."""
    small = {("encap", 1): [300.0, 300.0, 300.0], ("trivial_tc", 1): [100.0, 100.0, 100.0]}
    large = {("encap", 1): [600.0, 600.0, 600.0], ("trivial_tc", 1): [200.0, 200.0, 200.0]}
    t = dp.Table({1001: small, 100000: large})
    assert t.x(("encap", 1), ("trivial_tc", 1), 100000).median == pytest.approx(3.0)
    assert t.ns(("encap", 1), 100000).median == 600.0


def _tables(speed):
    """Every row of the module, both sizes, on a machine of per-round `speed`
    (a row's cost: its index + 1 times 100 ns)."""
    cost = {row: 100.0 * (i + 1) for i, row in enumerate(dp.ROWS)}
    calls = []

    def cold(row):
        calls.append(row)
        return {"cold": cost[row] * speed[(len(calls) - 1) // (2 * len(dp.ROWS))]}

    def warm(row):
        calls.append(row)
        v = cost[row] * speed[(len(calls) - 1) // (2 * len(dp.ROWS))]
        return {"warm": v / 2, "warm_mean": v / 2 + 10, "warm_median": v / 2 - 10}
    by_way: dict[str, dict[int, dict]] = {}
    for entries in (dp.SMALL_MAP_CACHE, dp.LARGE_MAP_CACHE):
        calls.clear()
        for way, rows in dp.take(dp.ROWS, len(speed), [warm, cold]).items():
            by_way.setdefault(way, {})[entries] = rows
    return cost, {way: dp.Table(v) for way, v in by_way.items()}


def test_report_keeps_figure_names_and_records_per_round_ratios():
    cost, tables = _tables([1.0, 1.5, 0.7])
    rec = Recorder("test")
    dp._report(rec, tables, dp.LARGE_MAP_CACHE, 12.0, 0.4, 1)
    f = rec.figures
    want = cost["encap", 1] / cost["trivial_tc", 1]
    for sfx in ("", "_warm"):
        assert f[f"datapath_encap_vs_trivial{sfx}_ratio"] == pytest.approx(want)
        assert f[f"datapath_encap_vs_trivial{sfx}_ratio_min"] == pytest.approx(want)
        assert f[f"datapath_encap_vs_trivial{sfx}_ratio_max"] == pytest.approx(want)
        assert f"datapath_trivial_tc{sfx}_ns_per_pkt" in f
        assert f"datapath_bpf_forward_tc_in_1flow{sfx}_ns_per_pkt" in f
        assert f"datapath_encap_1000flows_100000entries{sfx}_ns_per_pkt" in f
        assert f[f"datapath_xdp_decap_vs_bpf_forward_1flow_100000entries{sfx}_ratio"] == pytest.approx(
            cost["xdp_decap", 1] / cost["bpf_forward_xdp_in", 1])
    assert not any("warm_mean" in k or "warm_median" in k for k in f)
    text = "\n".join(rec.lines)
    # the tables give ns as median (min-max) over rounds, ratios likewise
    assert f"| {cost['trivial_tc', 1]:.0f} ({0.7 * cost['trivial_tc', 1]:.0f}-{1.5 * cost['trivial_tc', 1]:.0f}) |" \
        in text
    assert f"| {want:.2f} ({want:.2f}-{want:.2f}) |" in text
    assert "others used 40% of the machine's CPU time" in text
    assert "median of each round's blocks of 100 runs" in text and "mean of each round's runs" in text
