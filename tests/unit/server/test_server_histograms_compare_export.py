"""Histograms, comparisons across runs, and the streamed CSV/Parquet exports."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from trickscope_wire import HistogramColumns, PointBatch, dumps, encode_f64, encode_i64

pytestmark = pytest.mark.timeout(120)

NAN, INF = float("nan"), float("inf")


def _histogram_batch(batch_id: str, name: str, steps: list[int], bins: int, base: float) -> bytes:
    counts = [base + s + b for s in steps for b in range(bins)]
    columns = HistogramColumns(
        name=name,
        bins=bins,
        steps=encode_i64(steps),
        lo=encode_f64([-1.0 * (s + 1) for s in steps]),
        hi=encode_f64([1.0 * (s + 1) for s in steps]),
        counts=encode_f64(counts),
        nonfinite=encode_f64([float(s % 2) for s in steps]),
        times=encode_f64([1000.0 + s for s in steps]),
    )
    return dumps(PointBatch(batch_id=batch_id, series=[], histograms=[columns]))


def test_histograms_round_trip_thin_evenly_and_a_relogged_step_is_replaced(
    client: TestClient,
    make_run: Callable[..., dict],  # type: ignore[type-arg]
) -> None:
    make_run("r1")
    name = "grad_hist/fc.weight"
    body = _histogram_batch("h1", name, list(range(0, 100, 10)), 4, 0.0)
    response = client.post("/api/v1/runs/r1/points", content=body)
    assert response.status_code == 200, response.text
    again = _histogram_batch("h2", name, [20], 4, 100.0)
    assert client.post("/api/v1/runs/r1/points", content=again).status_code == 200
    got = client.get("/api/v1/runs/r1/histograms", params={"name": name}).json()
    assert got["bins"] == 4
    assert got["step"] == list(range(0, 100, 10))
    assert got["lo"][1] == -11.0 and got["hi"][1] == 11.0
    assert got["counts"][0] == [0.0, 1.0, 2.0, 3.0]
    assert got["counts"][2] == [120.0, 121.0, 122.0, 123.0]  # the later write won
    assert got["nonfinite"][:2] == [0.0, 0.0]
    thin = client.get("/api/v1/runs/r1/histograms", params={"name": name, "points": 3}).json()
    assert thin["step"] == [0, 40, 90] or thin["step"] == [0, 50, 90]
    names = client.get("/api/v1/runs/r1/histograms/names").json()
    assert names == {"names": [name]}
    missing = client.get("/api/v1/runs/r1/histograms", params={"name": "nope"})
    assert missing.status_code == 404
    assert client.delete("/api/v1/runs/r1").status_code == 204
    make_run("r1")
    assert client.get("/api/v1/runs/r1/histograms", params={"name": name}).status_code == 404


def test_a_batch_naming_a_step_twice_keeps_its_later_histogram_and_nonfinite_edges_come_back(
    client: TestClient,
    make_run: Callable[..., dict],  # type: ignore[type-arg]
) -> None:
    """One statement writes a batch's histograms (PostgreSQL: one ``unnest``), so the batch's
    own repeats are resolved before it; edges of a tensor that held NaN or ±Inf are real
    values of the run."""
    make_run("r1")
    name = "grad_hist/fc.weight"
    twice = [
        HistogramColumns(
            name=name,
            bins=2,
            steps=encode_i64([5]),
            lo=encode_f64([lo]),
            hi=encode_f64([INF]),
            counts=encode_f64(counts),
            nonfinite=encode_f64([3.0]),
            times=encode_f64([1.0]),
        )
        for lo, counts in ((-1.0, [1.0, 2.0]), (NAN, [7.0, 8.0]))
    ]
    body = dumps(PointBatch(batch_id="b1", series=[], histograms=twice))
    assert client.post("/api/v1/runs/r1/points", content=body).status_code == 200
    got = client.get("/api/v1/runs/r1/histograms", params={"name": name}).json()
    assert got["step"] == [5]
    assert got["counts"] == [[7.0, 8.0]]  # the later in the batch won
    assert got["lo"] == ["NaN"] and got["hi"] == ["Infinity"] and got["nonfinite"] == [3.0]


def test_malformed_histograms_are_422_problems_naming_the_field(
    client: TestClient,
    make_run: Callable[..., dict],  # type: ignore[type-arg]
) -> None:
    make_run("r1")
    good = {
        "name": "h",
        "bins": 2,
        "steps": encode_i64([1]),
        "lo": encode_f64([0.0]),
        "hi": encode_f64([1.0]),
        "counts": encode_f64([1.0, 2.0]),
        "nonfinite": encode_f64([0.0]),
        "times": encode_f64([0.0]),
    }
    cases = [
        ({"bins": 0}, "bins"),
        ({"bins": True}, "bins"),
        ({"counts": encode_f64([1.0])}, "counts"),
        ({"lo": encode_f64([])}, "lo"),
        ({"counts": encode_f64([NAN, 1.0])}, "counts"),
        ({"steps": "!!"}, "steps"),
    ]
    for change, field in cases:
        body = {"batch_id": "x", "series": [], "histograms": [{**good, **change}]}
        response = client.post("/api/v1/runs/r1/points", json=body)
        assert response.status_code == 422, (change, response.text)
        problem = response.json()
        assert problem["errors"][0]["loc"][-1] == field
    response = client.post(
        "/api/v1/runs/r1/points", json={"batch_id": "x", "histograms": {}, "series": []}
    )
    assert response.status_code == 422


def test_compare_returns_one_series_of_several_runs(
    client: TestClient,
    make_run: Callable[..., dict],  # type: ignore[type-arg]
    post_batch: Callable[..., dict],  # type: ignore[type-arg]
) -> None:
    for run_id, offset in (("a", 0.0), ("b", 10.0)):
        make_run(run_id)
        post_batch(run_id, "b1", {"loss": (list(range(50)), [offset + s for s in range(50)])})
    make_run("c")  # no such series: empty columns
    response = client.get(
        "/api/v1/compare/series", params={"runs": "a,b,c", "name": "loss", "points": 10}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["name"] == "loss"
    assert [r["run_id"] for r in body["runs"]] == ["a", "b", "c"]
    a, b, c = body["runs"]
    assert a["downsampled"] and len(a["step"]) <= 10 and a["total"] == 50
    assert b["value"][0] == 10.0
    assert c["step"] == [] and c["total"] == 0
    window = client.get(
        "/api/v1/compare/series", params={"runs": "a", "name": "loss", "start": 5, "end": 7}
    ).json()
    assert window["runs"][0]["step"] == [5, 6, 7]
    unknown = client.get("/api/v1/compare/series", params={"runs": "a,zz", "name": "loss"})
    assert unknown.status_code == 404
    assert (
        client.get("/api/v1/compare/series", params={"runs": ",", "name": "x"}).status_code == 422
    )
    many = ",".join(f"r{i}" for i in range(30))
    assert (
        client.get("/api/v1/compare/series", params={"runs": many, "name": "x"}).status_code == 422
    )


def _export_points(post_batch: Callable[..., dict]) -> None:  # type: ignore[type-arg]
    post_batch("r1", "b1", {"loss": ([1, 2, 3], [0.5, NAN, INF]), 'odd,"name"': ([7], [-INF])})
    post_batch("r1", "b2", {"loss": ([2], [-0.25])})  # re-logged: the later write wins


def test_csv_export_streams_every_point_with_exact_non_finite_values(
    client: TestClient,
    make_run: Callable[..., dict],  # type: ignore[type-arg]
    post_batch: Callable[..., dict],  # type: ignore[type-arg]
) -> None:
    make_run("r1")
    _export_points(post_batch)
    response = client.get("/api/v1/runs/r1/export.csv")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0] == ["series", "step", "value", "wall_time"]
    assert rows[1:] == [
        ["loss", "1", "0.5", "1.0"],
        ["loss", "2", "-0.25", "2.0"],
        ["loss", "3", "Infinity", "3.0"],
        ['odd,"name"', "7", "-Infinity", "7.0"],
    ]
    assert client.get("/api/v1/runs/nope/export.csv").status_code == 404


def test_parquet_export_reads_back_with_pyarrow(
    client: TestClient,
    make_run: Callable[..., dict],  # type: ignore[type-arg]
    post_batch: Callable[..., dict],  # type: ignore[type-arg]
) -> None:
    import pyarrow.parquet as pq  # a dependency of the server (Parquet export)

    make_run("r1")
    _export_points(post_batch)
    post_batch("r1", "b3", {"nan": ([5], [NAN])})
    response = client.get("/api/v1/runs/r1/export.parquet")
    assert response.status_code == 200
    table = pq.read_table(io.BytesIO(response.content))
    rows = table.to_pylist()
    assert [(r["series"], r["step"]) for r in rows] == [
        ("loss", 1),
        ("loss", 2),
        ("loss", 3),
        ("nan", 5),
        ('odd,"name"', 7),
    ]
    assert rows[1]["value"] == -0.25
    assert rows[2]["value"] == INF and rows[4]["value"] == -INF
    assert math.isnan(rows[3]["value"])
    assert rows[0]["wall_time"] == 1.0
    assert client.get("/api/v1/runs/nope/export.parquet").status_code == 404
