"""The ingest's write transaction: statements sent to the driver and those of its session are one
transaction, committed together or rolled back together, on both stores."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from trickscope_server.services import ingest
from trickscope_server.storage import Database, RunRow
from trickscope_wire import dumps

from .conftest import point_batch

pytestmark = pytest.mark.timeout(120)


def _rename(db: Database, run_id: str, *, fail: bool) -> None:
    """Change the run's name through the driver and its project through the session."""
    with db.write() as tx:
        mark = "?" if tx.dialect == "sqlite" else "%s"
        tx.execute(f"UPDATE runs SET name = {mark} WHERE id = {mark}", ("renamed", run_id))
        tx.session.execute(update(RunRow).where(RunRow.id == run_id).values(project="moved"))
        if fail:
            raise RuntimeError("after both statements")


def _name_and_project(db: Database, run_id: str) -> tuple[str, str]:
    with db.reader() as session:
        row = session.execute(select(RunRow.name, RunRow.project).where(RunRow.id == run_id)).one()
    return str(row[0]), str(row[1])


def test_driver_statements_and_the_session_commit_together(
    app: FastAPI, make_run: Callable[..., Any]
) -> None:
    make_run("r1", project="proj", name="run")
    _rename(app.state.db, "r1", fail=False)
    assert _name_and_project(app.state.db, "r1") == ("renamed", "moved")


def test_driver_statements_and_the_session_roll_back_together(
    app: FastAPI, make_run: Callable[..., Any]
) -> None:
    make_run("r1", project="proj", name="run")
    with pytest.raises(RuntimeError, match="after both statements"):
        _rename(app.state.db, "r1", fail=True)
    assert _name_and_project(app.state.db, "r1") == ("run", "proj")


def test_a_batch_that_fails_midway_leaves_nothing_and_its_retry_is_stored(
    client: TestClient,
    app: FastAPI,
    make_run: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch that fails after its driver statements (sequence number, batch id, chunks,
    summaries) ran is rolled back whole: the retry of the same batch id is not taken for a
    duplicate, and the run holds its points once."""
    make_run("r1")
    body = dumps(point_batch("b1", {"loss": ([1, 2, 3], [0.5, float("nan"), 0.25])}))

    def broken(*_args: Any, **_kwargs: Any) -> list[int]:
        raise RuntimeError("storage failed after the statements")

    with monkeypatch.context() as patched:
        patched.setattr(ingest, "_series_due", broken)
        with pytest.raises(RuntimeError, match="storage failed"):
            ingest.ingest_batch(
                app.state.db, run_id="r1", batch=ingest.parse_batch(body, max_points=100)
            )
    assert client.get("/api/v1/runs/r1/series").json()["series"] == []
    answer = client.post(
        "/api/v1/runs/r1/points", content=body, headers={"content-type": "application/json"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"accepted": 3, "duplicate": False, "followed": False}
    (series,) = client.get("/api/v1/runs/r1/series").json()["series"]
    assert (series["name"], series["count"], series["first_nonfinite_step"]) == ("loss", 3, 2)
    points = client.get("/api/v1/runs/r1/points", params={"name": "loss"}).json()
    assert (points["step"], points["value"]) == ([1, 2, 3], [0.5, "NaN", 0.25])
