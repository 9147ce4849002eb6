"""A batch's chunk and summary rows are the same whether its series are summarised together or
one by one: the batch path (a few series on) must agree exactly with the per-series one,
non-finite values and steps out of order included."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from trickscope_server.services.ingest import DecodedSeries, _all_summaries, _summaries

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


# Fewer series take the per-series path on both sides: nothing to compare.
@pytest.mark.parametrize("count", [3, 5, 8, 40])
def test_a_batch_summarised_together_equals_each_series_summarised_alone(count: int) -> None:
    rng = random.Random(count)
    for _ in range(50):
        series = [_series(f"s{i}", rng) for i in range(count)]
        ids = {s.name: i + 1 for i, s in enumerate(series)}
        chunks, summaries = _all_summaries(series, ids, "run", 7)
        for s, chunk, summary in zip(series, chunks, summaries, strict=True):
            alone_chunk, alone_summary = _summaries(s, "run", ids[s.name], 7)
            for key in alone_chunk.keys() | chunk.keys():
                assert _same(chunk[key], alone_chunk[key]), (key, s.steps, s.values)
            for key in alone_summary.keys() | summary.keys():
                assert _same(summary[key], alone_summary[key]), (key, s.steps, s.values)
