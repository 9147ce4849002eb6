"""A batch's chunk and summary rows are the same whether its series are summarised together, one
by one, or in plain Python (a batch of a few points): every path must agree exactly with the
per-series one, non-finite values and steps out of order included."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from trickscope_server.services.batch_summaries import (
    batch_summaries,
    plain_summary,
    series_summary,
)
from trickscope_server.services.ingest import DecodedSeries
from trickscope_server.services.summaries import PLAIN_POINTS, _firsts_and_repeats
from trickscope_server.storage.block_summaries import NO_ROW, RECORD, RunSummaries

SPECIAL = (math.nan, math.inf, -math.inf, 0.0, -0.0)


def _series(name: str, rng: random.Random) -> DecodedSeries:
    size = rng.randint(1, 7)
    start = rng.randint(-5, 1000)
    steps = [start + i for i in range(size)]
    if rng.random() < 0.3:  # a re-logged or out-of-order step
        steps[rng.randrange(size)] = start + rng.randint(-3, size)
    values = [rng.choice(SPECIAL) if rng.random() < 0.2 else rng.uniform(-9, 9) for _ in steps]
    steps_array = np.array(steps, dtype="<i8")
    values_array = np.array(values, dtype="<f8")
    times = np.arange(size, dtype="<f8")
    return DecodedSeries(
        name=name,
        steps_raw=steps_array.tobytes(),
        values_raw=values_array.tobytes(),
        times_raw=times.tobytes(),
        steps=steps_array,
        values=values_array,
    )


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    return a == b


# Up to PLAIN_POINTS points a batch is summarised in plain Python; past them, together (from
# three series on) or one by one: 150 series of 1-7 points take the batch path.
@pytest.mark.parametrize("count", [3, 5, 8, 40, 150])
def test_a_batch_summarised_together_equals_each_series_summarised_alone(count: int) -> None:
    rng = random.Random(count)
    for _ in range(50):
        series = [_series(f"s{i}", rng) for i in range(count)]
        ids = {s.name: i + 1 for i, s in enumerate(series)}
        chunks, summaries = batch_summaries(series, ids, "run", 7)
        for s, chunk, summary in zip(series, chunks, summaries, strict=True):
            alone_chunk, alone_summary = series_summary(s, "run", ids[s.name], 7)
            for key in alone_chunk.keys() | chunk.keys():
                assert _same(chunk[key], alone_chunk[key]), (key, s.steps, s.values)
            for key in alone_summary.keys() | summary.keys():
                assert _same(summary[key], alone_summary[key]), (key, s.steps, s.values)


def _assert_same_rows(a: tuple[dict, dict], b: tuple[dict, dict], s: DecodedSeries) -> None:  # type: ignore[type-arg]
    for mine, theirs in zip(a, b, strict=True):
        for key in mine.keys() | theirs.keys():
            assert _same(mine[key], theirs[key]), (key, s.steps, s.values)


def test_plain_python_summaries_equal_numpy_ones() -> None:
    rng = random.Random(5)
    for i in range(2000):
        s = _series(f"s{i}", rng)
        _assert_same_rows(plain_summary(s, "run", 3, 9), series_summary(s, "run", 3, 9), s)


def test_a_batch_past_the_plain_bound_is_summarised_the_same() -> None:
    rng = random.Random(11)
    series = [_series(f"s{i}", rng) for i in range(PLAIN_POINTS)]
    assert sum(s.steps.size for s in series) > PLAIN_POINTS
    ids = {s.name: i for i, s in enumerate(series)}
    chunks, summaries = batch_summaries(series, ids, "run", 2)
    for s, chunk, summary in zip(series, chunks, summaries, strict=True):
        _assert_same_rows((chunk, summary), series_summary(s, "run", ids[s.name], 2), s)


def test_firsts_and_repeats_are_the_same_in_plain_python_and_vectorised() -> None:
    rng = random.Random(3)
    for _ in range(300):
        columns = [_series("s", rng).steps for _ in range(rng.randint(1, 6))]
        few = _firsts_and_repeats(columns)
        assert sum(c.size for c in columns) <= PLAIN_POINTS
        many = _firsts_and_repeats(columns * (PLAIN_POINTS // len(columns) + 1))
        assert many == (
            few[0] * (PLAIN_POINTS // len(columns) + 1),
            few[1] * (PLAIN_POINTS // len(columns) + 1),
        )
        assert few[0] == [int(c.min()) for c in columns]
        assert few[1] == [np.unique(c).size < c.size for c in columns]


def _records(rng: random.Random) -> RunSummaries:
    ids = sorted(rng.sample(range(1, 400), 60))
    recs = np.zeros(len(ids), dtype=RECORD)
    recs["id"] = ids
    recs["count"] = [rng.choice([0, 1, 5]) for _ in ids]
    recs["last"] = [rng.randint(0, 100) for _ in ids]
    recs["row_last"] = [rng.choice([NO_ROW, rng.randint(0, 100)]) for _ in ids]
    return RunSummaries("run", recs)


def test_block_records_of_a_few_series_are_found_as_those_of_many() -> None:
    """The few logged series of a flush are looked up one by one; the answers are those of the
    array path over every record."""
    rng = random.Random(7)
    for _ in range(200):
        summaries = _records(rng)
        wanted = rng.sample(range(1, 400), rng.randint(1, 10))  # with and without a record
        low = rng.randint(0, 100)
        everyone = summaries.last_steps(low)
        assert summaries.last_steps(low, of=wanted) == {
            sid: last for sid, last in everyone.items() if sid in wanted
        }
        lasts = {sid: rng.randint(0, 120) for sid in wanted}
        one_by_one, at_once = _records(random.Random(1)), _records(random.Random(1))
        one_by_one.rows_written(lasts)
        padding = {sid: -1 for sid in range(1000, 1020)}  # past the few: the array path
        at_once.rows_written({**lasts, **padding})
        assert one_by_one.records.tobytes() == at_once.records.tobytes()
        assert one_by_one.dirty == at_once.dirty
