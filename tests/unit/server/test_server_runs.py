"""Runs: idempotent create/update, layers, finish, listing with pagination, delete."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from trickscope_server.storage import BatchRow, ChunkRow, RunRow, SeriesRow

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
        for row in (RunRow, SeriesRow, ChunkRow, BatchRow):
            column = row.id if row is RunRow else row.run_id
            count = session.scalar(select(func.count()).select_from(row).where(column == "gone"))
            assert count == 0, row.__tablename__
        kept = session.scalar(select(func.count()).select_from(ChunkRow))
        assert kept == 1
