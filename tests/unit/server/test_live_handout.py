"""How a run's reader hands pages out: one read per batch, a slice of streams per loop turn,
every point once and in order (NaN, ±Inf and re-logged steps included), idle streams nudged."""

from __future__ import annotations

import asyncio
import math
import time
from contextlib import AsyncExitStack

import httpx
import orjson
import pytest
from fastapi import FastAPI

from tests.helpers import run_async
from tests.unit.server.conftest import point_batch
from tests.unit.server.test_server_sse import base_url  # noqa: F401 (fixture)
from trickscope_server.live import Broadcaster, Subscriber, feed
from trickscope_server.services import ingest, runs
from trickscope_wire import RunCreate, dumps

pytestmark = pytest.mark.timeout(60)

TOKENS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _store(app: FastAPI, run_id: str, batch_id: str, steps: list[int], values: list[float]) -> None:
    body = dumps(point_batch(batch_id, {"loss": (steps, values)}))
    batch = ingest.parse_batch(body, max_points=1000)
    ingest.ingest_batch(app.state.db, run_id=run_id, batch=batch)


async def _points(subscriber: Subscriber) -> tuple[int, list[int], list[float]]:
    """(id, steps, values) of the next points message, skipping status and health."""
    while True:
        message = await subscriber.next(5.0)
        assert message, "no message in time"
        if b"event: points" in message:
            head, _, data = message.partition(b"data: ")
            event_id = int(head.split(b"id: ", 1)[1].split(b"\n", 1)[0])
            column = orjson.loads(data)["series"]["loss"]
            values = [TOKENS.get(v, v) if isinstance(v, str) else v for v in column["value"]]
            return event_id, column["step"], values


def _same(got: list[float], want: list[float]) -> bool:
    """Equal values, NaN equal to NaN."""
    return len(got) == len(want) and all(
        (math.isnan(g) and math.isnan(w)) or g == w for g, w in zip(got, want, strict=True)
    )


def test_a_caught_up_reader_reads_storage_once_per_batch(app: FastAPI) -> None:
    runs.upsert_run(app.state.db, run_id="r", payload=RunCreate(project="p", name="n"))
    live = Broadcaster(app.state.db, poll_seconds=30.0, health_seconds=30.0)

    async def scenario() -> None:
        async with AsyncExitStack() as stack:
            subscribers = [
                await stack.enter_async_context(live.subscribe("r", 0)) for _ in range(5)
            ]
            run_feed = live.feed("r")
            assert run_feed is not None
            await asyncio.to_thread(_store, app, "r", "b0", [0], [1.0])
            live.publish("r")
            for subscriber in subscribers:
                assert (await _points(subscriber))[1] == [0]
            reads_before = run_feed.reads
            for step in range(1, 11):
                await asyncio.to_thread(_store, app, "r", f"b{step}", [step], [1.0])
                live.publish("r")
                for subscriber in subscribers:
                    assert (await _points(subscriber))[1] == [step]
            # A read that reached the newest point says so: no empty read to find out (which
            # used to double the reads). One spare for a wake-up that lands mid-read.
            assert run_feed.reads - reads_before <= 11

    run_async(scenario)


def test_a_page_is_handed_out_a_slice_of_streams_per_turn_of_the_event_loop(
    app: FastAPI,
) -> None:
    runs.upsert_run(app.state.db, run_id="r", payload=RunCreate(project="p", name="n"))
    live = Broadcaster(app.state.db, poll_seconds=30.0, health_seconds=30.0)
    count = 4 * feed.STREAMS_PER_TURN

    async def scenario() -> None:
        async with AsyncExitStack() as stack:
            subscribers = [
                await stack.enter_async_context(live.subscribe("r", 0)) for _ in range(count)
            ]
            order: list[str] = []
            received = 0

            async def receive(subscriber: Subscriber) -> None:
                nonlocal received
                await _points(subscriber)
                order.append("stream")
                received += 1

            async def other_work() -> None:  # stands for an ingest request's next step
                while received < count:
                    order.append("other")
                    await asyncio.sleep(0)

            receivers = [asyncio.create_task(receive(s)) for s in subscribers]
            await asyncio.sleep(0.2)  # the first (empty) reads are done
            await asyncio.to_thread(_store, app, "r", "b0", [0], [1.0])
            live.publish("r")
            await asyncio.wait_for(asyncio.gather(other_work(), *receivers), 10)
            first, last = order.index("stream"), len(order) - 1 - order[::-1].index("stream")
            # Other work ran between the slices: a request waits for one slice, not for all.
            assert order[first:last].count("other") >= count // feed.STREAMS_PER_TURN - 1

    run_async(scenario)


def test_many_streams_get_every_point_once_in_order_and_a_resume_gets_the_rest(
    app: FastAPI,
) -> None:
    runs.upsert_run(app.state.db, run_id="r", payload=RunCreate(project="p", name="n"))
    live = Broadcaster(app.state.db, poll_seconds=30.0, health_seconds=30.0)
    batches = [
        ([0, 1], [0.5, math.nan]),
        ([2], [math.inf]),
        ([1, 3], [-math.inf, 2.0]),  # step 1 logged again: sent again, in arrival order
        ([4], [-0.0]),
        ([5, 6], [1e308, math.nan]),
    ]
    want_steps = [s for steps, _ in batches for s in steps]
    want_values = [v for _, values in batches for v in values]

    async def scenario() -> None:
        async with AsyncExitStack() as stack:
            subscribers = [
                await stack.enter_async_context(live.subscribe("r", 0))
                for _ in range(3 * feed.STREAMS_PER_TURN + 1)
            ]
            ids: list[list[int]] = [[] for _ in subscribers]
            steps: list[list[int]] = [[] for _ in subscribers]
            values: list[list[float]] = [[] for _ in subscribers]
            for number, (batch_steps, batch_values) in enumerate(batches):
                await asyncio.to_thread(_store, app, "r", f"b{number}", batch_steps, batch_values)
                live.publish("r")
                for i, subscriber in enumerate(subscribers):
                    while len(steps[i]) < sum(len(b[0]) for b in batches[: number + 1]):
                        event_id, got_steps, got_values = await _points(subscriber)
                        ids[i].append(event_id)
                        steps[i] += got_steps
                        values[i] += got_values
            for i in range(len(subscribers)):
                assert steps[i] == want_steps
                assert _same(values[i], want_values)
                assert ids[i] == sorted(set(ids[i]))  # each cursor once, rising
            # A stream resuming from the cursor after the second batch gets exactly the rest.
            async with live.subscribe("r", ids[0][1]) as resumed:
                got_steps: list[int] = []
                got_values: list[float] = []
                while len(got_steps) < 5:
                    _, batch_steps, batch_values = await _points(resumed)
                    got_steps += batch_steps
                    got_values += batch_values
                assert got_steps == want_steps[3:]
                assert _same(got_values, want_values[3:])

    run_async(scenario)


def test_an_idle_stream_is_nudged_into_keepalives(base_url: str) -> None:  # noqa: F811
    # The test app's keepalive is 0.5 s: an idle stream sends one within about a second.
    with httpx.Client(base_url=base_url, timeout=10) as client:
        assert client.put("/api/v1/runs/r", json={"project": "p", "name": "n"}).status_code == 200
        with client.stream("GET", "/api/v1/runs/r/events") as stream:
            start = time.monotonic()
            keepalives = 0
            for line in stream.iter_lines():
                if line == ": keepalive":
                    keepalives += 1
                    if keepalives == 2:
                        break
            assert time.monotonic() - start < 5.0
