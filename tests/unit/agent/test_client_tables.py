"""The client's tables: history aligned by step, runs flattened, non-finite tokens decoded."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from trickscope.client import Api, Finding, RunRecord, SeriesSummary
from trickscope.client._frames import history_table, runs_table
from trickscope.client._history import choose_source
from trickscope.client._series import Columns, is_layer_series
from trickscope.client._values import to_float, to_floats

SERIES = {
    "loss": Columns([0, 1, 2], [1.0, math.nan, -math.inf], [10.0, 11.0, 12.0]),
    "eval": Columns([2, 4], [0.5, math.inf], [12.5, 14.5]),
}


def test_tokens_decode_to_the_floats_they_stand_for() -> None:
    assert to_floats([1.5, "Infinity", "-Infinity", 2]) == [1.5, math.inf, -math.inf, 2.0]
    assert math.isnan(to_float("NaN"))  # type: ignore[arg-type]
    assert to_float(None) is None
    with pytest.raises(ValueError, match="not a number"):
        to_float("nan")


def test_history_frame_is_indexed_by_every_step_of_any_series() -> None:
    frame = history_table(SERIES, wall_time=True, as_frame=True)
    assert frame.index.tolist() == [0, 1, 2, 4] and frame.index.name == "step"
    assert list(frame.columns) == ["loss", "loss:wall_time", "eval", "eval:wall_time"]
    assert frame["loss"][2] == -math.inf and math.isnan(frame["loss"][1])
    assert math.isnan(frame["loss"][4])  # not logged there
    assert frame["eval"][4] == math.inf
    assert frame["eval:wall_time"][2] == 12.5


def test_history_dict_marks_missing_steps_as_none() -> None:
    table = history_table(SERIES, wall_time=False, as_frame=False)
    assert table["step"] == [0, 1, 2, 4]
    assert table["eval"] == [None, None, 0.5, math.inf]
    assert table["loss"][3] is None and math.isnan(table["loss"][1])
    rebuilt = pd.DataFrame(table).set_index("step")
    pd.testing.assert_frame_equal(
        rebuilt, history_table(SERIES, wall_time=False, as_frame=True), check_index_type=False
    )


def test_runs_table_flattens_nested_config_and_latest() -> None:
    api = Api("http://127.0.0.1:9")  # never contacted: the records are built from answers
    answer = {
        "id": "r1",
        "name": "n",
        "project": "p",
        "status": "finished",
        "config": {"optimizer": {"name": "sgd", "betas": [0.9, 0.99]}, "lr": 0.1},
        "tags": ["t"],
        "latest": {"loss": "NaN", "acc": 0.5, "gone": None},
        "created_at": "2026-01-01T00:00:00+00:00",
        "started_at": "2026-01-01T00:00:00+00:00",
        "ended_at": "2026-01-01T01:30:00+00:00",
    }
    record = RunRecord(api, answer)
    assert record.duration == 5400.0
    assert math.isnan(record.latest["loss"])  # type: ignore[arg-type]
    (row,) = runs_table([record], as_frame=False)
    assert row["config.optimizer.name"] == "sgd"
    assert row["config.optimizer.betas"] == [0.9, 0.99]
    assert row["config.lr"] == 0.1 and row["duration_s"] == 5400.0
    assert math.isnan(row["latest.gone"]) and row["latest.acc"] == 0.5
    frame = runs_table([record], as_frame=True)
    assert frame.index.tolist() == ["r1"] and frame.loc["r1", "config.optimizer.name"] == "sgd"


def summary(name: str, count: int) -> SeriesSummary:
    return SeriesSummary(name, count, 0, count - 1, 0.0, 0.0, 0.0, None)


def test_parquet_is_chosen_only_for_a_large_share_of_a_large_run() -> None:
    big = [summary(f"s{i}", 100_000) for i in range(10)]
    assert choose_source("auto", big, big, points=None, start=None, end=None) == "parquet"
    assert choose_source("auto", big[:1], big, points=None, start=None, end=None) == "json"
    assert choose_source("auto", big, big, points=500, start=None, end=None) == "json"
    small = [summary("s", 1000)]
    assert choose_source("auto", small, small, points=None, start=None, end=None) == "json"
    # A window holding a small part of the points reads JSON.
    assert choose_source("auto", big, big, points=None, start=0, end=999) == "json"
    assert choose_source("json", big, big, points=None, start=None, end=None) == "json"
    # Wall times double what JSON moves: a smaller share already reads Parquet.
    three = big[:3]
    assert choose_source("auto", three, big, points=None, start=None, end=None) == "json"
    assert (
        choose_source("auto", three, big, points=None, start=None, end=None, wall_time=True)
        == "parquet"
    )


def test_findings_keep_the_documented_fields_and_ignore_new_ones() -> None:
    finding = Finding.from_json(
        {"check": "c", "severity": "error", "title": "t", "step": 3, "layer": None, "new": 1}
    )
    assert (finding.check, finding.step, finding.layer, finding.evidence) == ("c", 3, None, {})


def test_per_layer_series_are_told_from_run_level_ones() -> None:
    layers = {"fc.weight", "blocks.0/attn.qkv"}
    assert is_layer_series("grad_norm/fc.weight", layers)
    assert is_layer_series("update_ratio/blocks.0/attn.qkv", layers)
    assert not is_layer_series("grad_norm/total", layers)
    assert not is_layer_series("fc.weight", layers)
