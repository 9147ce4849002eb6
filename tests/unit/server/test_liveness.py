"""Liveness: every request for a run stamps it, and a silent running run reads as crashed.

Runs are aged by moving their ``last_seen_at`` back in the database, so the status a reader gets
does not depend on the test machine's speed; one test waits out a small real grace instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import update

from tests.unit.server.conftest import JSON, point_batch
from trickscope_server.app import create_app
from trickscope_server.config import Settings
from trickscope_server.services.liveness import shown_status, silent_before
from trickscope_server.storage import RunRow
from trickscope_wire import dumps

pytestmark = pytest.mark.timeout(60)

GRACE = 120.0  # the settings fixture keeps the default


@pytest.mark.parametrize(
    ("status", "last_seen_at", "shown"),
    [
        ("running", 100.0, "running"),  # seen after the cutoff
        ("running", 90.0, "running"),  # exactly at the cutoff: not yet silent
        ("running", 89.9, "crashed"),
        ("running", None, "running"),  # never seen (stored before liveness): as stored
        ("finished", 0.0, "finished"),  # final statuses are final
        ("failed", 0.0, "failed"),
        ("crashed", 100.0, "crashed"),  # the agent said so itself
    ],
)
def test_shown_status_turns_only_a_silent_running_run_crashed(
    status: str, last_seen_at: float | None, shown: str
) -> None:
    cutoff = silent_before(10.0, now=100.0)
    assert cutoff == 90.0
    assert shown_status(status, last_seen_at, cutoff) == shown
    assert shown_status(status, last_seen_at, None) == status  # no judgement asked for


def _age(app: FastAPI, run_id: str, seconds: float) -> float:
    """Move the run's last_seen_at ``seconds`` into the past; returns the new value."""
    then = time.time() - seconds
    with app.state.db.transaction() as session:
        session.execute(update(RunRow).where(RunRow.id == run_id).values(last_seen_at=then))
    return then


def _forget(app: FastAPI, run_id: str) -> None:
    """Make the run look stored before the server tracked liveness."""
    with app.state.db.transaction() as session:
        session.execute(update(RunRow).where(RunRow.id == run_id).values(last_seen_at=None))


def _last_seen(app: FastAPI, run_id: str) -> float | None:
    with app.state.db.reader() as session:
        row = session.get(RunRow, run_id)
        assert row is not None
        return row.last_seen_at


def _statuses(client: TestClient, **params: str) -> dict[str, str]:
    answer = client.get("/api/v1/runs", params=params)
    assert answer.status_code == 200, answer.text
    return {run["id"]: run["status"] for run in answer.json()["runs"]}


def test_heartbeat_answers_204_and_stamps_the_run(
    app: FastAPI, client: TestClient, make_run: Callable[..., dict]
) -> None:
    make_run("r1")
    aged = _age(app, "r1", 600)
    answer = client.post("/api/v1/runs/r1/heartbeat", json={})
    assert answer.status_code == 204, answer.text
    assert answer.content == b""
    seen = _last_seen(app, "r1")
    assert seen is not None and seen > aged + 500
    out = client.get("/api/v1/runs/r1").json()
    assert out["status"] == "running"
    assert out["last_seen_at"] is not None


def test_heartbeat_of_an_unknown_run_is_a_404_problem(client: TestClient) -> None:
    answer = client.post("/api/v1/runs/nope/heartbeat", json={})
    assert answer.status_code == 404
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["type"] == "urn:trickscope:problem:run-not-found"


def test_heartbeat_may_leave_its_body_out(
    client: TestClient, make_run: Callable[..., dict]
) -> None:
    make_run("r1")
    assert client.post("/api/v1/runs/r1/heartbeat").status_code == 204


@pytest.mark.parametrize("body", [b"[]", b"1", b"not json"])
def test_heartbeat_body_must_be_a_json_object(
    client: TestClient, make_run: Callable[..., dict], body: bytes
) -> None:
    make_run("r1")
    answer = client.post("/api/v1/runs/r1/heartbeat", content=body)
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")


def _requests(client: TestClient) -> dict[str, Callable[[], object]]:
    """Every request an agent makes for run r1 besides the heartbeat, by name."""
    batch = iter(range(1_000_000))
    return {
        "put run": lambda: client.put("/api/v1/runs/r1", json={"project": "p", "name": "n"}),
        "points": lambda: client.post(
            "/api/v1/runs/r1/points",
            content=dumps(point_batch(f"b{next(batch)}", {"loss": ([1], [0.5])})),
        ),
        "layers": lambda: client.put("/api/v1/runs/r1/layers", json={"layers": ["fc.weight"]}),
        "rank": lambda: client.put("/api/v1/runs/r1/ranks/0", json={"system": {"host": "a"}}),
        "setup": lambda: client.put("/api/v1/runs/r1/setup", json={"setup": {"optimizer": {}}}),
        "findings": lambda: client.put("/api/v1/runs/r1/findings", json={"findings": []}),
        "heartbeat": lambda: client.post("/api/v1/runs/r1/heartbeat", json={}),
    }


@pytest.mark.parametrize(
    "request_name", ["put run", "points", "layers", "rank", "setup", "findings", "heartbeat"]
)
def test_every_request_for_a_run_revives_it(
    app: FastAPI, client: TestClient, make_run: Callable[..., dict], request_name: str
) -> None:
    make_run("r1")
    _age(app, "r1", GRACE + 60)
    assert client.get("/api/v1/runs/r1").json()["status"] == "crashed"
    answer = _requests(client)[request_name]()
    assert answer.status_code in (200, 204), answer.text  # type: ignore[attr-defined]
    assert client.get("/api/v1/runs/r1").json()["status"] == "running"


def test_finish_stamps_the_run_and_its_status_stays_final(
    app: FastAPI, client: TestClient, make_run: Callable[..., dict]
) -> None:
    make_run("r1")
    aged = _age(app, "r1", 600)
    answer = client.post("/api/v1/runs/r1/finish", json={"status": "finished"})
    assert answer.status_code == 200
    assert (_last_seen(app, "r1") or 0) > aged + 500
    _age(app, "r1", 10 * GRACE)
    assert client.get("/api/v1/runs/r1").json()["status"] == "finished"
    assert _statuses(client, status="finished") == {"r1": "finished"}
    assert _statuses(client, status="crashed") == {}


def test_a_silent_run_reads_crashed_in_the_run_the_list_and_the_filters(
    app: FastAPI, client: TestClient, make_run: Callable[..., dict]
) -> None:
    for run_id in ("silent", "live", "old", "done", "said-crashed"):
        make_run(run_id)
    client.post("/api/v1/runs/done/finish", json={"status": "finished"})
    client.post("/api/v1/runs/said-crashed/finish", json={"status": "crashed"})
    _age(app, "silent", GRACE + 1)
    _age(app, "done", 10 * GRACE)
    _forget(app, "old")

    assert client.get("/api/v1/runs/silent").json()["status"] == "crashed"
    assert _statuses(client) == {
        "silent": "crashed",
        "live": "running",
        "old": "running",
        "done": "finished",
        "said-crashed": "crashed",
    }
    assert set(_statuses(client, status="crashed")) == {"silent", "said-crashed"}
    assert set(_statuses(client, status="running")) == {"live", "old"}
    assert set(_statuses(client, status="finished")) == {"done"}

    # The stored status is untouched: one request and the run is running again.
    assert client.post("/api/v1/runs/silent/heartbeat", json={}).status_code == 204
    assert set(_statuses(client, status="running")) == {"live", "old", "silent"}
    assert set(_statuses(client, status="crashed")) == {"said-crashed"}


def test_status_sort_and_paging_use_the_shown_status(
    app: FastAPI, client: TestClient, make_run: Callable[..., dict]
) -> None:
    ids = [f"r{i}" for i in range(6)]
    for run_id in ids:
        make_run(run_id)
    for run_id in ids[:3]:
        _age(app, run_id, GRACE + 30)
    order: list[tuple[str, str]] = []
    cursor = None
    while True:
        params = {"sort": "status", "limit": "2", **({"cursor": cursor} if cursor else {})}
        page = client.get("/api/v1/runs", params=params).json()
        order += [(run["status"], run["id"]) for run in page["runs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert order == sorted(order)  # ascending status, then id: no repeat, no gap
    assert [status for status, _ in order] == ["crashed"] * 3 + ["running"] * 3

    paged: list[str] = []
    cursor = None
    while True:
        params = {"status": "crashed", "limit": "1", **({"cursor": cursor} if cursor else {})}
        page = client.get("/api/v1/runs", params=params).json()
        paged += [run["id"] for run in page["runs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(paged) == ids[:3] and len(paged) == 3


def test_a_duplicate_batch_changes_nothing_not_even_liveness(
    app: FastAPI, client: TestClient, make_run: Callable[..., dict]
) -> None:
    make_run("r1")
    body = dumps(point_batch("b1", {"loss": ([1], [0.5])}))
    assert client.post("/api/v1/runs/r1/points", content=body).status_code == 200
    aged = _age(app, "r1", GRACE + 30)
    answer = client.post("/api/v1/runs/r1/points", content=body)
    assert answer.json()["duplicate"] is True
    assert _last_seen(app, "r1") == pytest.approx(aged)
    assert client.get("/api/v1/runs/r1").json()["status"] == "crashed"


@pytest.fixture
def short_grace_client(settings: Settings) -> Iterator[TestClient]:
    """A client of a server whose grace period is half a second."""
    app = create_app(settings.model_copy(update={"liveness_grace_seconds": 0.5}))
    with TestClient(app, raise_server_exceptions=False, headers=JSON) as client:
        yield client
    app.state.db.dispose()


def test_a_small_grace_turns_a_run_crashed_by_the_clock(short_grace_client: TestClient) -> None:
    client = short_grace_client
    assert client.put("/api/v1/runs/r1", json={"project": "p", "name": "n"}).status_code == 200
    assert client.get("/api/v1/runs/r1").json()["status"] == "running"
    time.sleep(0.8)
    assert client.get("/api/v1/runs/r1").json()["status"] == "crashed"
    assert _statuses(client, status="crashed") == {"r1": "crashed"}
    assert client.post("/api/v1/runs/r1/heartbeat", json={}).status_code == 204
    assert client.get("/api/v1/runs/r1").json()["status"] == "running"
