"""Runs: idempotent create/update, layers, finish, listing with pagination, delete."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from trickscope_server.storage import BatchRow, ChunkRow, RunRow, SeriesRow
from trickscope_server.storage.models import HistogramRow

pytestmark = pytest.mark.timeout(60)


def test_put_run_twice_creates_once_and_updates_metadata(
    client: TestClient, make_run: Callable[..., dict]
) -> None:
    first = make_run("r1", project="p", name="a", config={"lr": 0.1}, tags=["x"])
    second = make_run("r1", project="p", name="b", config={"lr": 0.2}, tags=["y"])
    assert first["created_at"] == second["created_at"]
    assert second["name"] == "b"
    assert second["config"] == {"lr": 0.2}
    assert second["tags"] == ["y"]
    assert second["status"] == "running"
    assert len(client.get("/api/v1/runs").json()["runs"]) == 1


def test_layers_are_kept_in_model_order_and_per_layer_series_leave_latest(
    client: TestClient, make_run: Callable[..., dict], post_batch: Callable[..., dict]
) -> None:
    make_run("r1")
    out = client.put("/api/v1/runs/r1/layers", json={"layers": ["fc.weight", "conv.weight"]})
    assert out.status_code == 200
    assert out.json()["layers"] == ["fc.weight", "conv.weight"]
    post_batch(
        "r1",
        "b1",
        {
            "loss/train": ([1, 2], [0.5, 0.25]),
            "grad_norm/fc.weight": ([1, 2], [1.0, 2.0]),
            "grad_norm/total": ([1, 2], [3.0, float("nan")]),
        },
    )
    latest = client.get("/api/v1/runs/r1").json()["latest"]
    assert latest == {"loss/train": 0.25, "grad_norm/total": "NaN"}


def test_ranks_declare_their_host_and_a_config_update_keeps_them(
    client: TestClient, make_run: Callable[..., dict]
) -> None:
    make_run("r1")
    for rank, host in ((1, "node-b"), (0, "node-a"), (1, "node-b2")):  # a re-declare replaces
        out = client.put(f"/api/v1/runs/r1/ranks/{rank}", json={"system": {"hostname": host}})
        assert out.status_code == 200
    assert out.json()["ranks"] == {"0": {"hostname": "node-a"}, "1": {"hostname": "node-b2"}}
    make_run("r1")  # rank 0 sends its run again (a config update): the ranks stay
    assert client.get("/api/v1/runs/r1").json()["ranks"]["1"] == {"hostname": "node-b2"}

    missing = client.put("/api/v1/runs/nope/ranks/1", json={"system": {}})
    assert missing.status_code == 404 and "PUT /api/v1/runs/nope" in missing.json()["detail"]
    for bad_rank in ("-1", "x", str(2**21)):
        bad = client.put(f"/api/v1/runs/r1/ranks/{bad_rank}", json={"system": {}})
        assert bad.status_code == 422 and bad.json()["errors"], bad_rank
    not_a_dict = client.put("/api/v1/runs/r1/ranks/2", json={"system": ["host"]})
    assert not_a_dict.status_code == 422


def test_finish_sets_status_and_end_time(client: TestClient, make_run: Callable[..., dict]) -> None:
    make_run("r1")
    out = client.post("/api/v1/runs/r1/finish", json={"status": "failed", "ended_at": 1.7e9})
    assert out.status_code == 200
    assert out.json()["status"] == "failed"
    assert out.json()["ended_at"].startswith("2023-11-14T22:13:20")


def test_runs_page_newest_first_with_cursor_and_filters(
    client: TestClient, make_run: Callable[..., dict]
) -> None:
    for i in range(7):
        make_run(f"r{i}", project="even" if i % 2 == 0 else "odd")
    client.post("/api/v1/runs/r2/finish", json={"status": "finished"})
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/api/v1/runs", params=params).json()
        seen += [r["id"] for r in page["runs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"r{i}" for i in reversed(range(7))]
    evens = client.get("/api/v1/runs", params={"project": "even"}).json()["runs"]
    assert [r["id"] for r in evens] == ["r6", "r4", "r2", "r0"]
    done = client.get("/api/v1/runs", params={"status": "finished"}).json()["runs"]
    assert [r["id"] for r in done] == ["r2"]


def test_delete_removes_everything_the_run_owns(
    app: FastAPI,
    client: TestClient,
    make_run: Callable[..., dict],
    post_batch: Callable[..., dict],
) -> None:
    make_run("gone")
    make_run("kept")
    post_batch("gone", "b1", {"loss": ([1, 2, 3], [1.0, 2.0, 3.0])})
    post_batch("kept", "b1", {"loss": ([1], [1.0])})
    assert client.delete("/api/v1/runs/gone").status_code == 204
    assert client.get("/api/v1/runs/gone").status_code == 404
    assert client.delete("/api/v1/runs/gone").status_code == 404
    with app.state.db.reader() as session:
        for row in (RunRow, SeriesRow, ChunkRow, BatchRow, HistogramRow):
            column = row.id if row is RunRow else row.run_id
            count = session.scalar(select(func.count()).select_from(row).where(column == "gone"))
            assert count == 0, row.__tablename__
        kept = session.scalar(select(func.count()).select_from(ChunkRow))
        assert kept == 1


def _all_pages(client: TestClient, limit: int, **params: object) -> list[str]:
    seen: list[str] = []
    cursor = None
    for _ in range(50):
        query: dict[str, object] = {"limit": limit, **params}
        if cursor:
            query["cursor"] = cursor
        response = client.get("/api/v1/runs", params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        seen += [r["id"] for r in page["runs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return seen
    raise AssertionError("pagination did not end")


def test_run_history_filters_by_tags_config_and_latest_metrics(
    client: TestClient, make_run: Callable[..., dict], post_batch: Callable[..., dict]
) -> None:
    specs = [
        ("a", ["base", "ema"], {"opt": {"name": "adamw", "lr": 0.001}, "ema": True}, 0.9),
        ("b", ["base"], {"opt": {"name": "sgd", "lr": 0.1}, "ema": False}, 0.3),
        ("c", ["ema"], {"opt": {"name": "adamw", "lr": 0.1}, "ema": True}, 0.5),
        ("d", [], {"opt": {"name": "adamw", "lr": 2}}, None),
    ]
    for run_id, tags, config, loss in specs:
        make_run(run_id, tags=tags, config=config)
        if loss is not None:
            post_batch(run_id, "b1", {"loss/train": ([1, 2], [10.0, loss])})

    def ids(**params: object) -> list[str]:
        response = client.get("/api/v1/runs", params={"sort": "name", **params})
        assert response.status_code == 200, response.text
        return [r["id"] for r in response.json()["runs"]]

    assert ids(tag="ema") == ["a", "c"]
    assert ids(tag=["ema", "base"]) == ["a"]
    assert ids(config="opt.name:adamw") == ["a", "c", "d"]
    assert ids(config=["opt.name:adamw", "opt.lr:0.1"]) == ["c"]
    assert ids(config="opt.lr:2.0") == ["d"]
    assert ids(config="ema:true") == ["a", "c"]
    assert ids(config="opt.name:nope") == []
    assert ids(metric="loss/train<0.6") == ["b", "c"]
    assert ids(metric="loss/train>=0.5") == ["a", "c"]
    assert ids(metric=["loss/train>0.2", "loss/train<=0.5"]) == ["b", "c"]
    assert ids(metric="loss/train=0.3") == ["b"]
    assert ids(metric="missing<1") == []


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("metric:loss", ["r3", "r0", "r6", "r4", "r1", "r5", "r2", "nometric"]),
        ("-metric:loss", ["r2", "r5", "r1", "r4", "r6", "r0", "r3", "nometric"]),
        ("config:width", ["nometric", "r0", "r1", "r2", "r3", "r4", "r5", "r6"]),
        ("name", ["nometric", "r0", "r1", "r2", "r3", "r4", "r5", "r6"]),
        ("-created_at", ["nometric", "r6", "r5", "r4", "r3", "r2", "r1", "r0"]),
    ],
)
def test_run_history_sorts_with_stable_cursor_pages(
    client: TestClient,
    make_run: Callable[..., dict],
    post_batch: Callable[..., dict],
    sort: str,
    expected: list[str],
) -> None:
    losses = [0.3, 0.7, 0.9, 0.1, 0.5, 0.7, 0.3]  # ties: pages must neither repeat nor skip
    for i, loss in enumerate(losses):
        make_run(f"r{i}", config={"width": i // 2 * 2 if i < 7 else 0})
        post_batch(f"r{i}", "b", {"loss": ([1], [loss])})
    make_run("nometric", config={"width": -1})
    for limit in (1, 2, 3, 50):
        got = _all_pages(client, limit, sort=sort)
        assert len(got) == len(set(got)) == 8
        if sort.startswith(("metric", "-metric")):
            # Equal values may come in either id order, but always the same one.
            key = {f"r{i}": v for i, v in enumerate(losses)}
            values = [key.get(r) for r in got]
            want = [key.get(r) for r in expected]
            assert values == want
            assert got == _all_pages(client, 50, sort=sort)
        elif sort.startswith("config"):
            widths = [-1, 0, 0, 2, 2, 4, 4, 6]
            by_id = {"nometric": -1, **{f"r{i}": i // 2 * 2 for i in range(7)}}
            assert [by_id[r] for r in got] == widths
        else:
            assert got == expected


@pytest.mark.parametrize(
    ("params", "loc"),
    [
        ({"sort": "bogus"}, "sort"),
        ({"sort": "config:"}, "sort"),
        ({"sort": "config:a..b"}, "sort"),
        ({"config": "novalue"}, "config"),
        ({"config": ":x"}, "config"),
        ({"metric": "loss~1"}, "metric"),
        ({"metric": "loss<abc"}, "metric"),
        ({"metric": "loss<nan"}, "metric"),
        ({"cursor": "garbage!!"}, "cursor"),
        ({"status": "sleeping"}, "status"),
    ],
)
def test_malformed_run_history_parameters_are_422_problems_naming_them(
    client: TestClient, params: dict[str, str], loc: str
) -> None:
    response = client.get("/api/v1/runs", params=params)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["errors"][0]["loc"] == ["query", loc]


def test_a_cursor_from_another_sort_is_rejected(
    client: TestClient, make_run: Callable[..., dict]
) -> None:
    for i in range(3):
        make_run(f"r{i}")
    cursor = client.get("/api/v1/runs", params={"limit": 1}).json()["next_cursor"]
    response = client.get("/api/v1/runs", params={"cursor": cursor, "sort": "name"})
    assert response.status_code == 422


def test_a_nan_latest_metric_reads_as_missing_in_filters_and_sorts(
    client: TestClient, make_run: Callable[..., dict], post_batch: Callable[..., dict]
) -> None:
    # The same answers on SQLite (which stores NaN as NULL) and PostgreSQL (NaN > any number).
    for run_id, loss in (("low", 0.1), ("high", 0.9), ("diverged", float("nan"))):
        make_run(run_id)
        post_batch(run_id, "b", {"loss": ([1, 2], [0.5, loss])})
    make_run("none")

    def ids(**params: object) -> list[str]:
        response = client.get("/api/v1/runs", params=params)
        assert response.status_code == 200, response.text
        return [r["id"] for r in response.json()["runs"]]

    assert ids(metric="loss>0.05", sort="name") == ["high", "low"]
    assert ids(metric="loss<1", sort="name") == ["high", "low"]
    assert ids(sort="metric:loss")[:2] == ["low", "high"]
    assert ids(sort="-metric:loss")[:2] == ["high", "low"]
    assert set(ids(sort="metric:loss")[2:]) == {"diverged", "none"}
    latest = {r["id"]: r["latest"] for r in client.get("/api/v1/runs").json()["runs"]}
    assert latest["diverged"] == {"loss": "NaN"}  # still shown exactly
