"""The per-run reader: one read per wake-up for many subscribers, a slow one re-reads, no gaps."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import httpx
import orjson
import pytest
from fastapi import FastAPI

from tests.helpers import run_async, wait_until
from tests.unit.server.conftest import point_batch
from tests.unit.server.test_server_sse import base_url  # noqa: F401 (fixture)
from trickscope_server.live import Broadcaster, Subscriber, feed
from trickscope_server.services import ingest, runs
from trickscope_wire import RunCreate, dumps

pytestmark = pytest.mark.timeout(60)


def _store(app: FastAPI, run_id: str, step: int) -> None:
    body = dumps(point_batch(f"b{step}", {"loss": ([step], [1.0 / (step + 1)])}))
    batch = ingest.parse_batch(body, max_points=1000)
    ingest.ingest_batch(app.state.db, run_id=run_id, batch=batch)


async def _points(subscriber: Subscriber, timeout: float = 5.0) -> list[int]:
    """Steps of the next points message (skipping status and health messages)."""
    while True:
        message = await subscriber.next(timeout)
        assert message, "no message in time"
        if b"event: points" in message:
            steps: list[int] = orjson.loads(message.split(b"data: ", 1)[1])["series"]["loss"][
                "step"
            ]
            return steps


async def _skip_health(subscriber: Subscriber, timeout: float = 5.0) -> bytes | None:
    """The next message that is not a health report."""
    while True:
        message = await subscriber.next(timeout)
        if message is None or not message.startswith(b"event: health"):
            return message


async def _publish_and_store(app: FastAPI, live: Broadcaster, run_id: str, step: int) -> None:
    await asyncio.to_thread(_store, app, run_id, step)
    live.publish(run_id)


def test_many_subscribers_share_one_reader_and_each_gets_every_point_once(app: FastAPI) -> None:
    runs.upsert_run(app.state.db, run_id="r", payload=RunCreate(project="p", name="n"))
    live = Broadcaster(app.state.db, poll_seconds=30.0, health_seconds=30.0)

    async def scenario() -> None:
        async with AsyncExitStack() as stack:
            subscribers = [
                await stack.enter_async_context(live.subscribe("r", 0)) for _ in range(50)
            ]
            run_feed = live.feed("r")
            assert run_feed is not None and live.listener_count("r") == 50
            for step in range(5):
                reads_before = run_feed.reads
                await _publish_and_store(app, live, "r", step)
                for subscriber in subscribers:
                    assert await _points(subscriber) == [step]
                # One read brings the batch to all 50; a wake-up or a periodic poll that lands
                # on a loaded machine may add a few, far from the 50 that a read per stream makes.
                assert run_feed.reads - reads_before <= 6
        assert live.feed("r") is None  # the reader stopped with its last subscriber

    run_async(scenario)


def test_a_slow_subscriber_falls_behind_without_holding_others_and_misses_nothing(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feed, "OUTBOX_CAPACITY", 4)
    runs.upsert_run(app.state.db, run_id="r", payload=RunCreate(project="p", name="n"))
    live = Broadcaster(app.state.db, poll_seconds=30.0, health_seconds=30.0)

    async def scenario() -> None:
        async with AsyncExitStack() as stack:
            fast = await stack.enter_async_context(live.subscribe("r", 0))
            slow = await stack.enter_async_context(live.subscribe("r", 0))
            for step in range(12):  # three times what the slow one's outbox holds
                await _publish_and_store(app, live, "r", step)
                assert await _points(fast) == [step]
            assert slow.lagging
            got: list[int] = []
            while len(got) < 12:
                got += await _points(slow)
            assert got == list(range(12))  # in order, none twice, none missing
            assert slow.cursor == fast.cursor

    run_async(scenario)


def test_a_failed_read_ends_the_streams_and_the_next_stream_gets_a_fresh_reader(
    app: FastAPI,
) -> None:
    runs.upsert_run(app.state.db, run_id="r", payload=RunCreate(project="p", name="n"))
    _store(app, "r", 0)
    live = Broadcaster(app.state.db, poll_seconds=30.0, health_seconds=30.0)

    async def scenario() -> None:
        async with live.subscribe("r", 0) as before:
            assert await _points(before) == [0]
            chunks = app.state.db.engine.dialect.identifier_preparer.quote("chunks")
            with app.state.db.engine.begin() as conn:  # a real storage failure
                conn.exec_driver_sql(f"ALTER TABLE {chunks} RENAME TO chunks_away")
            live.publish("r")
            # (The run's health report may come first: it follows the points it was caught up to.)
            assert await _skip_health(before) == feed.RECONNECT  # the client reconnects
            assert await before.next(5.0) == b""  # and the stream ends
            with app.state.db.engine.begin() as conn:
                conn.exec_driver_sql(f"ALTER TABLE chunks_away RENAME TO {chunks}")
            async with live.subscribe("r", 0) as after:
                assert await _points(after) == [0]

    run_async(scenario)


def test_streams_closed_by_their_clients_leave_and_the_reader_stops(
    app: FastAPI,
    base_url: str,  # noqa: F811
) -> None:
    runs.upsert_run(app.state.db, run_id="r", payload=RunCreate(project="p", name="n"))
    live: Broadcaster = app.state.broadcaster
    with httpx.Client(base_url=base_url, timeout=10) as client:
        streams = [client.stream("GET", "/api/v1/runs/r/events") for _ in range(3)]
        for stream in streams:
            assert stream.__enter__().status_code == 200
        wait_until(lambda: live.listener_count("r") == 3, timeout=5, what="three listeners")
        for stream in streams:
            stream.__exit__(None, None, None)
    wait_until(lambda: live.feed("r") is None, timeout=5, what="the reader to stop")
