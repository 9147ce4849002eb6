"""Logged points into wire batches: row blocks turned into columns in bulk, each series whole
where the limit allows, at most once per batch, every point once and in order."""

from __future__ import annotations

import math
from array import array

from trickscope.logged import LoggedBatcher
from trickscope.scalars import Columns, Layout, RowBlock
from trickscope_wire import SeriesColumns, decode_f64, decode_i64


def block(names: tuple[str, ...], steps: range) -> RowBlock:
    rows = RowBlock(Layout(names))
    for step in steps:
        rows.steps.append(step)
        rows.times.append(1000.0 + step)
        rows.values.extend([step + k / 8 if k else math.nan for k in range(len(names))])
    return rows


def test_blocks_and_series_are_cut_into_bounded_batches_without_losing_order() -> None:
    batches: list[list[SeriesColumns]] = []
    batcher = LoggedBatcher(12, batches.append, clean=lambda name: name.replace("\x00", "?"))
    batcher.add("a", Columns(array("q", [0, 1]), array("d", [0.5, math.inf]), array("d", [1, 2])))
    batcher.add_block(block(("a", "b", "c\x00"), range(2, 7)))  # "a" again: a batch of its own
    batcher.add_block(block(("w", *(f"x{k}" for k in range(14))), range(2)))
    batcher.add("b", Columns(array("q", [9]), array("d", [-math.inf]), array("d", [3])))
    batcher.add_block(block(("d\x00", "d?", "e"), range(2)))  # two keys, one stored name
    batcher.flush()
    got: dict[str, list[tuple[int, float, float]]] = {}
    for batch in batches:
        names = [series.name for series in batch]
        assert len(names) == len(set(names))  # a series at most once per batch
        sizes = [len(decode_i64(series.steps)) for series in batch]
        assert sum(sizes) <= 12
        for series in batch:
            points = zip(decode_i64(series.steps), decode_f64(series.values),
                         decode_f64(series.times), strict=True)  # fmt: skip
            got.setdefault(series.name, []).extend(points)
    assert [(s, v) for s, v, _ in got["a"]][:2] == [(0, 0.5), (1, math.inf)]
    assert [s for s, _, _ in got["a"]] == [0, 1, 2, 3, 4, 5, 6]
    assert all(math.isnan(v) for _, v, _ in got["a"][2:])
    assert got["b"] == [(s, s + 1 / 8, 1000.0 + s) for s in range(2, 7)] + [(9, -math.inf, 3.0)]
    assert [s for s, _, _ in got["c?"]] == list(range(2, 7))
    assert got["x13"] == [(0, 14 / 8, 1000.0), (1, 1 + 14 / 8, 1001.0)]
    assert [s for s, _, _ in got["d?"]] == [0, 1, 0, 1] and len(got["e"]) == 2
    assert len(got) == 20
