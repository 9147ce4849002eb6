"""Wide per-layer batches (many series sharing one steps column): summaries and points stay exact
on both back ends, whatever the batch re-logs, and names are checked in every batch."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from trickscope_wire import encode_f64, encode_i64

pytestmark = pytest.mark.timeout(120)

NAN, INF = float("nan"), float("inf")
STATS = ("grad_norm", "weight_norm", "update_ratio")
LAYERS = 60  # 180 series a batch: the batch-wide summary path, not the per-series one


def _wide(steps: list[int], seed: int) -> dict[str, tuple[list[int], list[float]]]:
    """Every (statistic, layer) series over ``steps``, with a NaN and ±Inf in a few layers."""
    rng = np.random.default_rng(seed)
    out = {}
    for stat in STATS:
        for layer in range(LAYERS):
            values = rng.normal(size=len(steps)).tolist()
            if layer == 3:
                values[1] = NAN
            if layer == 7:
                values[0], values[-1] = INF, -INF
            out[f"{stat}/block{layer}.weight"] = (steps, values)
    return out


def _expected(columns: list[tuple[list[int], list[float]]]) -> dict[str, object]:
    """A series' summary from its columns in ingest order (the later write of a step wins)."""
    latest: dict[int, float] = {}
    for steps, values in columns:
        latest.update(zip(steps, values, strict=True))
    steps = sorted(latest)
    finite = [latest[s] for s in steps if math.isfinite(latest[s])]
    nonfinite = [s for s in steps if not math.isfinite(latest[s])]
    last = latest[steps[-1]]
    return {
        "count": len(steps),
        "first_step": steps[0],
        "last_step": steps[-1],
        "last_value": last if math.isfinite(last) else _token(last),
        "min_value": min(finite) if finite else None,
        "max_value": max(finite) if finite else None,
        "first_nonfinite_step": nonfinite[0] if nonfinite else None,
    }


def _token(value: float) -> str:
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def test_a_step_relogged_by_the_next_wide_batch_keeps_only_the_later_value(
    client: TestClient, make_run: Callable[..., dict], post_batch: Callable[..., dict]
) -> None:
    make_run("wide")
    first = _wide([0, 1, 2, 3, 4], seed=1)
    # A resumed run: the next batch starts again at step 3, with other values.
    second = _wide([3, 4, 5, 6], seed=2)
    post_batch("wide", "b1", first)
    post_batch("wide", "b2", second)
    stored = {s["name"]: s for s in client.get("/api/v1/runs/wide/series").json()["series"]}
    assert len(stored) == len(STATS) * LAYERS
    for name in first:
        summary = {k: v for k, v in stored[name].items() if k != "name"}
        assert summary == _expected([first[name], second[name]]), name
    for name in (
        "grad_norm/block3.weight",
        "update_ratio/block7.weight",
        "weight_norm/block0.weight",
    ):
        body = client.get("/api/v1/runs/wide/points", params={"name": name}).json()
        assert body["step"] == [0, 1, 2, 3, 4, 5, 6]
        later = dict(zip(*first[name], strict=True)) | dict(zip(*second[name], strict=True))
        want = [v if math.isfinite(v) else _token(v) for v in (later[s] for s in body["step"])]
        assert body["value"] == want


def test_nan_and_inf_in_a_wide_batch_are_stored_exactly(
    client: TestClient, make_run: Callable[..., dict], post_batch: Callable[..., dict]
) -> None:
    make_run("wide")
    columns = _wide([10, 11, 12], seed=3)
    post_batch("wide", "b1", columns)
    stored = {s["name"]: s for s in client.get("/api/v1/runs/wide/series").json()["series"]}
    assert stored["grad_norm/block3.weight"]["first_nonfinite_step"] == 11
    assert stored["grad_norm/block7.weight"]["first_nonfinite_step"] == 10
    assert stored["grad_norm/block7.weight"]["last_value"] == "-Infinity"
    assert stored["grad_norm/block0.weight"]["first_nonfinite_step"] is None
    body = client.get("/api/v1/runs/wide/points", params={"name": "grad_norm/block7.weight"})
    assert body.json()["value"][::2] == ["Infinity", "-Infinity"]


def _post_raw(client: TestClient, run_id: str, body: dict) -> int:  # type: ignore[type-arg]
    return client.post(f"/api/v1/runs/{run_id}/points", content=orjson.dumps(body)).status_code


def test_every_batch_checks_its_names_after_a_wide_batch_was_accepted(
    client: TestClient, make_run: Callable[..., dict], post_batch: Callable[..., dict]
) -> None:
    make_run("r1")
    post_batch("r1", "b1", _wide([0, 1], seed=4))

    def column(name: object) -> dict[str, object]:
        return {
            "name": name,
            "steps": encode_i64([2]),
            "values": encode_f64([1.0]),
            "times": encode_f64([2.0]),
        }

    known = "grad_norm/block0.weight"
    for bad in (known + "\x00", [known], 7, ""):
        body = {"batch_id": f"bad{bad!r}", "series": [column(known), column(bad)]}
        assert _post_raw(client, "r1", body) == 422, bad
    assert _post_raw(client, "r1", {"batch_id": "ok", "series": [column(known)]}) == 200
    stored = client.get("/api/v1/runs/r1/series").json()["series"]
    assert {s["name"]: s["count"] for s in stored}[known] == 3


def test_a_series_named_twice_in_one_batch_is_summarised_as_its_points_read(
    client: TestClient, make_run: Callable[..., dict]
) -> None:
    make_run("r1")

    def column(steps: list[int], values: list[float]) -> dict[str, object]:
        times = encode_f64([float(s) for s in steps])
        return {
            "name": "x",
            "steps": encode_i64(steps),
            "values": encode_f64(values),
            "times": times,
        }

    body = {"batch_id": "b", "series": [column([1, 2], [1.0, 2.0]), column([2, 3], [20.0, -3.0])]}
    assert _post_raw(client, "r1", body) == 200
    points = client.get("/api/v1/runs/r1/points", params={"name": "x"}).json()
    assert (points["step"], points["value"]) == ([1, 2, 3], [1.0, 20.0, -3.0])
    (summary,) = client.get("/api/v1/runs/r1/series").json()["series"]
    assert summary == {
        "name": "x",
        "count": 3,
        "first_step": 1,
        "last_step": 3,
        "last_value": -3.0,
        "min_value": -3.0,
        "max_value": 20.0,
        "first_nonfinite_step": None,
    }
