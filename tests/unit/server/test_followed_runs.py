"""A run with a live stream is marked followed, and each point batch's answer says so: the
agent's cue to send at its fast cadence. The mark is renewed while a stream lasts and lapses
after the last one leaves."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update

from tests.helpers import run_async, wait_until
from tests.unit.server.conftest import JSON, point_batch
from tests.unit.server.test_server_sse import base_url  # noqa: F401 (fixture)
from trickscope_server.live import Broadcaster, feed
from trickscope_server.services import runs
from trickscope_server.storage import RunRow
from trickscope_server.storage import runs as run_store
from trickscope_wire import RunCreate, dumps

pytestmark = pytest.mark.timeout(60)


def _followed_until(app: FastAPI, run_id: str) -> float | None:
    with app.state.db.reader() as session:
        value: float | None = session.scalar(
            select(RunRow.followed_until).where(RunRow.id == run_id)
        )
    return value


def _post(client: httpx.Client, run_id: str, batch_id: str, step: int) -> dict[str, object]:
    body = dumps(point_batch(batch_id, {"loss": ([step], [float(step)])}))
    response = client.post(f"/api/v1/runs/{run_id}/points", content=body)
    assert response.status_code == 200, response.text
    answer: dict[str, object] = response.json()
    return answer


def test_a_point_batch_answer_says_whether_a_live_stream_follows_the_run(
    app: FastAPI,
    base_url: str,  # noqa: F811
) -> None:
    runs.upsert_run(app.state.db, run_id="r", payload=RunCreate(project="p", name="n"))
    with httpx.Client(base_url=base_url, timeout=10, headers=JSON) as client:
        assert _post(client, "r", "b0", 0) == {"accepted": 1, "duplicate": False, "followed": False}
        with client.stream("GET", "/api/v1/runs/r/events") as stream:
            assert stream.status_code == 200
            wait_until(lambda: _followed_until(app, "r") is not None, timeout=10, what="mark")
            assert _followed_until(app, "r") > time.time() + feed.FOLLOW_SECONDS / 2
            assert _post(client, "r", "b1", 1)["followed"] is True
            # A re-sent batch changes nothing, and its answer still tells the cadence.
            assert _post(client, "r", "b1", 1) == {
                "accepted": 0,
                "duplicate": True,
                "followed": True,
            }
        # The stream is gone; its mark lapses (moved into the past here, not waited out).
        with app.state.db.transaction() as session:
            session.execute(
                update(RunRow).where(RunRow.id == "r").values(followed_until=time.time() - 1)
            )
        assert _post(client, "r", "b2", 2)["followed"] is False


def test_a_mark_is_never_shortened_by_another_workers_earlier_one(app: FastAPI) -> None:
    runs.upsert_run(app.state.db, run_id="r", payload=RunCreate(project="p", name="n"))
    with app.state.db.transaction() as session:
        run_store.mark_followed(session, run_id="r", until=2_000.0)
    with app.state.db.transaction() as session:
        run_store.mark_followed(session, run_id="r", until=1_000.0)
    assert _followed_until(app, "r") == 2_000.0
    with app.state.db.transaction() as session:
        run_store.mark_followed(session, run_id="r", until=3_000.0)
        run_store.mark_followed(session, run_id="gone", until=3_000.0)  # no such run: nothing
    assert _followed_until(app, "r") == 3_000.0


def test_the_reader_renews_the_mark_while_it_has_streams_and_stops_after_the_last_leaves(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feed, "FOLLOW_SECONDS", 1.0)
    monkeypatch.setattr(feed, "FOLLOW_RENEW_SECONDS", 0.2)
    runs.upsert_run(app.state.db, run_id="r", payload=RunCreate(project="p", name="n"))
    # A long poll: the renewal, not the poll, must wake the reader.
    live = Broadcaster(app.state.db, poll_seconds=30.0, health_seconds=30.0)

    async def scenario() -> None:
        async with live.subscribe("r", 0):
            await wait_for_mark(lambda until: until is not None)
            first = _followed_until(app, "r")
            assert first is not None
            await wait_for_mark(lambda until: until is not None and until >= first + 0.5)
        left = _followed_until(app, "r")
        await asyncio.sleep(0.6)  # three renewals' time: none comes
        assert _followed_until(app, "r") == left

    async def wait_for_mark(done: object) -> None:
        deadline = time.monotonic() + 10
        while not done(_followed_until(app, "r")):  # type: ignore[operator]
            assert time.monotonic() < deadline, "the mark was not renewed in time"
            await asyncio.sleep(0.05)

    run_async(scenario)
