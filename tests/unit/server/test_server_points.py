"""Ingest and chart reads: exact round trips, idempotency, dedupe, downsampling, heatmaps."""

from __future__ import annotations

import gzip
import math
from collections.abc import Callable

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.unit.server.conftest import point_batch
from trickscope_wire import dumps, encode_f64, encode_i64
from trickscope_wire.payloads import PointBatch, SeriesColumns

pytestmark = pytest.mark.timeout(120)

NAN, INF = float("nan"), float("inf")


def _points(client: TestClient, run_id: str, name: str, **params: object) -> dict:  # type: ignore[type-arg]
    response = client.get(f"/api/v1/runs/{run_id}/points", params={"name": name, **params})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    return response.json()  # type: ignore[no-any-return]


def test_points_round_trip_exactly_with_non_finite_values(
    client: TestClient, make_run: Callable[..., dict], post_batch: Callable[..., dict]
) -> None:
    make_run("r1")
    values = [0.1, NAN, INF, -INF, -0.0, 1e308, 5e-324]
    answer = post_batch("r1", "b1", {"loss": (list(range(7)), values)})
    assert answer == {"accepted": 7, "duplicate": False, "followed": False}
    body = _points(client, "r1", "loss", wall_time="true")
    assert body["step"] == list(range(7))
    assert body["value"] == [0.1, "NaN", "Infinity", "-Infinity", -0.0, 1e308, 5e-324]
    assert math.copysign(1.0, body["value"][4]) == -1.0
    assert body["wall_time"] == [float(s) for s in range(7)]
    assert _points(client, "r1", "loss")["wall_time"] is None
    assert body["downsampled"] is False
    assert body["total"] == 7
    assert body["cursor"] >= 1
    series = client.get("/api/v1/runs/r1/series").json()["series"]
    assert series == [
        {
            "name": "loss",
            "count": 7,
            "first_step": 0,
            "last_step": 6,
            "last_value": 5e-324,
            "min_value": -0.0,
            "max_value": 1e308,
            "first_nonfinite_step": 1,
        }
    ]


def test_a_resent_batch_changes_nothing(
    client: TestClient, make_run: Callable[..., dict], post_batch: Callable[..., dict]
) -> None:
    make_run("r1")
    post_batch("r1", "b1", {"loss": ([1, 2], [1.0, 2.0])})
    before = (_points(client, "r1", "loss"), client.get("/api/v1/runs/r1/series").json())
    assert post_batch("r1", "b1", {"loss": ([1, 2], [1.0, 2.0])}) == {
        "accepted": 0,
        "duplicate": True,
        "followed": True,  # its points were just read
    }
    after = (_points(client, "r1", "loss"), client.get("/api/v1/runs/r1/series").json())
    assert before == after


def test_a_wide_batch_summarises_irregular_series_as_one_series_batches_do(
    client: TestClient, make_run: Callable[..., dict], post_batch: Callable[..., dict]
) -> None:
    # A batch of many series summarises the regular ones together: a NaN, an Inf or a step
    # logged again in a few series must not change what any series stores.
    regular = {f"layer{i}": ([1, 2, 3], [float(i), -1.5 * i, 0.25]) for i in range(9)}
    irregular = {
        "nan_first": ([1, 2, 3], [NAN, 2.0, -3.0]),
        "inf_last": ([1, 2, 3], [1.0, -2.0, INF]),
        "no_finite": ([4, 5], [NAN, -INF]),
        "repeated_step": ([1, 2, 2], [1.0, 5.0, -7.0]),
        "steps_back": ([9, 3, 6], [0.5, 8.0, -0.5]),
    }
    columns = {**regular, **irregular}
    make_run("wide")
    make_run("one_each")
    post_batch("wide", "b", columns)
    for i, (name, column) in enumerate(columns.items()):
        post_batch("one_each", f"b{i}", {name: column})
    wide = client.get("/api/v1/runs/wide/series").json()["series"]
    one_each = client.get("/api/v1/runs/one_each/series").json()["series"]
    assert wide == one_each
    by_name = {s["name"]: s for s in wide}
    assert by_name["nan_first"]["first_nonfinite_step"] == 1
    assert by_name["nan_first"]["min_value"] == -3.0
    assert by_name["no_finite"]["min_value"] is None
    assert by_name["repeated_step"]["last_value"] == -7.0
    assert by_name["steps_back"]["last_value"] == 0.5
    assert by_name["layer4"]["min_value"] == -6.0
    for name in columns:
        stored, alone = _points(client, "wide", name), _points(client, "one_each", name)
        assert (stored["step"], stored["value"]) == (alone["step"], alone["value"])


def test_a_step_logged_again_reads_back_once_with_the_later_value(
    client: TestClient, make_run: Callable[..., dict], post_batch: Callable[..., dict]
) -> None:
    make_run("r1")
    post_batch("r1", "b1", {"loss": ([1, 2, 3], [1.0, 2.0, 3.0])})
    post_batch("r1", "b2", {"loss": ([3, 4], [30.0, 4.0])})
    # Step 3 again in the very next batch: stored steps 1, 2, 3, 3, 4 never go backwards.
    body = _points(client, "r1", "loss")
    assert (body["step"], body["value"]) == ([1, 2, 3, 4], [1.0, 2.0, 30.0, 4.0])
    post_batch("r1", "b3", {"loss": ([2], [NAN])})
    body = _points(client, "r1", "loss")
    assert body["step"] == [1, 2, 3, 4]
    assert body["value"] == [1.0, "NaN", 30.0, 4.0]
    assert body["total"] == 4


def test_window_reads_are_exact_and_long_reads_downsampled_keeping_a_spike(
    client: TestClient, make_run: Callable[..., dict], post_batch: Callable[..., dict]
) -> None:
    make_run("r1")
    n = 200_000
    rng = np.random.default_rng(1)
    values = rng.normal(size=n)
    values[123_457] = 1e9
    size = 20_000  # under the test server's 1 MiB body limit
    for i, start in enumerate(range(0, n, size)):
        chunk = (list(range(start, start + size)), values[start : start + size].tolist())
        post_batch("r1", f"b{i}", {"loss": chunk})
    coarse = _points(client, "r1", "loss", points=1000)
    assert coarse["downsampled"] is True
    assert coarse["total"] == n
    assert len(coarse["step"]) <= 1000
    assert coarse["value"][coarse["step"].index(123_457)] == 1e9
    fine = _points(client, "r1", "loss", start=1000, end=1499, points=1000)
    assert fine["downsampled"] is False
    assert fine["step"] == list(range(1000, 1500))
    assert fine["value"] == values[1000:1500].tolist()


def test_heatmap_rows_follow_model_order_then_undeclared_alphabetically(
    client: TestClient, make_run: Callable[..., dict], post_batch: Callable[..., dict]
) -> None:
    make_run("r1")
    client.put("/api/v1/runs/r1/layers", json={"layers": ["b.weight", "a.weight", "c.weight"]})
    post_batch(
        "r1",
        "b1",
        {
            "grad_norm/a.weight": ([0, 10], [1.0, 2.0]),
            "grad_norm/b.weight": ([0, 5], [3.0, INF]),
            "grad_norm/z.extra": ([5], [7.0]),
            "grad_norm/total": ([0], [9.0]),
            "weight_norm/a.weight": ([0], [8.0]),
        },
    )
    body = client.get("/api/v1/runs/r1/heatmap", params={"stat": "grad_norm"}).json()
    assert body["layers"] == ["b.weight", "a.weight", "z.extra"]
    assert body["step"] == [0, 5, 10]
    assert body["z"] == [[3.0, "Infinity", None], [1.0, None, 2.0], [None, 7.0, None]]
    assert body["downsampled"] is False


def test_heatmap_downsampling_keeps_each_buckets_largest_magnitude(
    client: TestClient, make_run: Callable[..., dict], post_batch: Callable[..., dict]
) -> None:
    make_run("r1")
    steps = list(range(1000))
    spiky = [0.0] * 1000
    spiky[517] = -50.0
    post_batch("r1", "b1", {"grad_norm/l1": (steps, spiky), "grad_norm/l2": (steps, [1.0] * 1000)})
    body = client.get("/api/v1/runs/r1/heatmap", params={"stat": "grad_norm", "points": 10}).json()
    assert body["downsampled"] is True
    assert len(body["step"]) == 10
    assert all(len(row) == 10 for row in body["z"])
    bucket = max(i for i, s in enumerate(body["step"]) if s <= 517)
    assert body["z"][0][bucket] == -50.0
    assert body["z"][1] == [1.0] * 10


def test_gzip_bodies_are_accepted(client: TestClient, make_run: Callable[..., dict]) -> None:
    make_run("r1")
    body = gzip.compress(dumps(point_batch("b1", {"loss": ([1, 2], [1.0, NAN])})))
    response = client.post(
        "/api/v1/runs/r1/points", content=body, headers={"Content-Encoding": "gzip"}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 2, "duplicate": False, "followed": False}
    assert _points(client, "r1", "loss")["value"] == [1.0, "NaN"]


def test_an_empty_series_is_accepted_and_stores_nothing(
    client: TestClient, make_run: Callable[..., dict]
) -> None:
    make_run("r1")
    batch = PointBatch(
        batch_id="b1",
        series=[SeriesColumns(name="x", steps=encode_i64([]), values=encode_f64([]), times="")],
    )
    response = client.post("/api/v1/runs/r1/points", content=dumps(batch))
    assert response.json() == {"accepted": 0, "duplicate": False, "followed": False}
    assert client.get("/api/v1/runs/r1/series").json() == {"series": []}


def test_a_run_deleted_and_created_again_gets_fresh_series(
    client: TestClient, make_run: Callable[..., dict], post_batch: Callable[..., dict]
) -> None:
    # Ingest remembers series ids per run; a new run under the old id must not inherit them.
    make_run("r1")
    post_batch("r1", "b1", {"loss": ([0, 1], [1.0, 2.0]), "acc": ([0], [0.5])})
    assert client.delete("/api/v1/runs/r1").status_code == 204
    make_run("r1")
    post_batch("r1", "b2", {"loss": ([5], [3.0])})
    post_batch("r1", "b3", {"loss": ([6], [4.0])})
    body = _points(client, "r1", "loss")
    assert body["step"] == [5, 6]
    assert body["value"] == [3.0, 4.0]
    series = client.get("/api/v1/runs/r1/series").json()["series"]
    assert [(s["name"], s["count"]) for s in series] == [("loss", 2)]
