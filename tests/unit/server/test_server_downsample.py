"""Downsampling keeps shape, extremes and every non-finite point; exact when it fits."""

from __future__ import annotations

import numpy as np
import pytest

from trickscope_server.downsample import dedupe_latest, downsample

pytestmark = pytest.mark.timeout(30)


def test_a_one_step_spike_in_a_million_points_survives_at_its_step() -> None:
    rng = np.random.default_rng(0)
    steps = np.arange(1_000_000, dtype=np.int64) * 2 + 10
    values = rng.normal(0.0, 1.0, steps.size)
    values[654_321] = 1e6
    values[123_456] = -1e6
    idx = downsample(steps, values, 1000)
    assert idx.size <= 1000
    kept = dict(zip(steps[idx].tolist(), values[idx].tolist(), strict=True))
    assert kept[steps[654_321]] == 1e6
    assert kept[steps[123_456]] == -1e6
    assert np.all(np.diff(idx) > 0)


def test_every_point_is_returned_when_the_window_fits_the_budget() -> None:
    steps = np.arange(500, dtype=np.int64)
    values = np.sin(steps / 10.0)
    idx = downsample(steps, values, 500)
    assert idx.tolist() == list(range(500))


def test_non_finite_points_are_never_dropped() -> None:
    steps = np.arange(100_000, dtype=np.int64)
    values = np.cos(steps / 100.0)
    special = {777: np.nan, 50_001: np.inf, 99_998: -np.inf}
    for i, v in special.items():
        values[i] = v
    idx = downsample(steps, values, 200)
    assert idx.size <= 200
    for i in special:
        assert i in idx.tolist()


def test_a_long_non_finite_stretch_keeps_its_edges_within_budget() -> None:
    values = np.ones(100_000)
    values[10_000:90_000] = np.nan
    idx = downsample(np.arange(values.size, dtype=np.int64), values, 100)
    assert idx.size <= 100
    assert {10_000, 89_999} <= set(idx.tolist())


def test_budget_below_three_is_rejected() -> None:
    with pytest.raises(ValueError, match="budget"):
        downsample(np.arange(10, dtype=np.int64), np.zeros(10), 2)


def test_dedupe_keeps_the_latest_write_of_each_step_sorted() -> None:
    steps = np.array([1, 2, 3, 2, 5, 4], dtype=np.int64)
    values = np.array([10.0, 20.0, 30.0, 21.0, 50.0, 40.0])
    out_steps, out_values = dedupe_latest(steps, values)
    assert out_steps.tolist() == [1, 2, 3, 4, 5]
    assert out_values.tolist() == [10.0, 21.0, 30.0, 40.0, 50.0]


def test_dedupe_keeps_one_value_of_a_step_written_twice_in_a_row() -> None:
    steps = np.array([1, 2, 3, 3, 4], dtype=np.int64)  # never decreasing, not strictly rising
    out_steps, out_values = dedupe_latest(steps, np.array([10.0, 20.0, 30.0, 31.0, 40.0]))
    assert out_steps.tolist() == [1, 2, 3, 4]
    assert out_values.tolist() == [10.0, 20.0, 31.0, 40.0]


def test_non_finite_points_that_fit_half_the_budget_are_all_kept() -> None:
    values = np.cos(np.arange(100_000) / 100.0)
    starts = np.arange(500, 100_000, 3_000)[:30]  # 30 stretches of 3: 90 for a budget of 200
    nonfinite = (starts[:, None] + np.arange(3)).ravel()
    values[nonfinite] = np.nan
    idx = downsample(np.arange(values.size, dtype=np.int64), values, 200)
    assert idx.size <= 200 and set(nonfinite.tolist()) <= set(idx.tolist())


def test_where_each_non_finite_stretch_starts_and_ends_is_kept() -> None:
    values = np.ones(100_000)
    stretches = [(10_000, 20_000), (30_000, 40_000), (60_000, 70_000)]
    for start, end in stretches:
        values[start:end] = np.inf
    idx = set(downsample(np.arange(values.size, dtype=np.int64), values, 100).tolist())
    assert {edge for start, end in stretches for edge in (start, end - 1)} <= idx


def test_too_many_non_finite_stretches_are_thinned_keeping_the_first_and_last() -> None:
    values = np.ones(100_000)
    for start in range(1_000, 99_000, 1_000):  # 98 stretches, 196 edges, for a budget of 100
        values[start : start + 10] = np.nan
    idx = downsample(np.arange(values.size, dtype=np.int64), values, 100)
    assert idx.size <= 100
    assert {1_000, 98_009} <= set(idx.tolist())


@pytest.mark.parametrize("budget", range(3, 13))
def test_a_small_budget_is_never_exceeded(budget: int) -> None:
    values = np.random.default_rng(budget).normal(size=1_000)
    idx = downsample(np.arange(values.size, dtype=np.int64), values, budget)
    assert 0 < idx.size <= budget and np.all(np.diff(idx) > 0)
