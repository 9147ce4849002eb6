"""Live updates over a real connection: resume from a cursor gets exactly the missing chunks."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import orjson
import pytest
import uvicorn
from fastapi import FastAPI

from tests.unit.server.conftest import JSON, point_batch
from trickscope_wire import dumps

pytestmark = pytest.mark.timeout(60)


@dataclass
class Event:
    id: int | None
    event: str
    data: dict  # type: ignore[type-arg]


@pytest.fixture
def base_url(app: FastAPI) -> Iterator[str]:
    """The app served by a real uvicorn on a free port, in a thread."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        assert thread.is_alive(), "uvicorn exited"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def _events(response: httpx.Response) -> Iterator[Event]:
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if line.startswith(":"):
            continue
        if line == "":
            if "event" in fields:
                raw_id = fields.get("id")
                yield Event(
                    int(raw_id) if raw_id else None, fields["event"], orjson.loads(fields["data"])
                )
            fields = {}
            continue
        key, _, value = line.partition(": ")
        fields[key] = value


def _collect_steps(events: Iterator[Event], want: int, seen_ids: list[int]) -> list[int]:
    steps: list[int] = []
    deadline = time.monotonic() + 15
    while len(steps) < want:
        assert time.monotonic() < deadline, f"only {steps} arrived"
        event = next(events)
        if event.event == "points":
            assert event.id is not None
            seen_ids.append(event.id)
            steps += event.data["series"]["loss"]["step"]
    return steps


def test_resume_gets_exactly_the_missing_points_once(base_url: str) -> None:
    timeout = httpx.Timeout(10.0)
    with httpx.Client(base_url=base_url, timeout=timeout, headers=JSON) as api:
        assert api.put("/api/v1/runs/r1", json={"project": "p", "name": "n"}).status_code == 200

        def send(batch_id: str, steps: list[int]) -> None:
            batch = point_batch(batch_id, {"loss": (steps, [float(s) for s in steps])})
            assert api.post("/api/v1/runs/r1/points", content=dumps(batch)).status_code == 200

        send("b1", [1, 2])
        cursor = api.get("/api/v1/runs/r1/points", params={"name": "loss"}).json()["cursor"]
        send("b2", [3, 4])
        send("b3", [5])

        ids: list[int] = []
        with httpx.Client(base_url=base_url, timeout=timeout, headers=JSON) as sse:
            with sse.stream("GET", "/api/v1/runs/r1/events", params={"after": cursor}) as stream:
                assert stream.headers["content-type"].startswith("text/event-stream")
                events = _events(stream)
                assert _collect_steps(events, 3, ids) == [3, 4, 5]
                send("b4", [6, 7])  # arrives while connected
                assert _collect_steps(events, 2, ids) == [6, 7]
        assert ids == sorted(set(ids))

        send("b5", [8])  # missed while disconnected
        with httpx.Client(base_url=base_url, timeout=timeout, headers=JSON) as sse:
            headers = {"Last-Event-ID": str(ids[-1])}
            with sse.stream("GET", "/api/v1/runs/r1/events", headers=headers) as stream:
                events = _events(stream)
                assert _collect_steps(events, 1, ids) == [8]
                api.post("/api/v1/runs/r1/finish", json={"status": "finished"})
                deadline = time.monotonic() + 15
                while True:
                    assert time.monotonic() < deadline, "no status event"
                    event = next(events)
                    assert event.event != "points", "a point arrived twice"
                    if event.event == "status":
                        assert event.data == {"status": "finished"}
                        break


def _next_health(events: Iterator[Event]) -> Event:
    deadline = time.monotonic() + 15
    while True:
        assert time.monotonic() < deadline, "no health event"
        event = next(events)
        if event.event == "health":
            assert event.id is None  # health never moves the resume point
            return event


@contextmanager
def _health_stream(
    base_url: str, run_id: str
) -> Iterator[tuple[Callable[..., None], Iterator[Event]]]:
    """A new run with its event stream open and its first health report read: a function that
    posts a batch of ``loss/train``, and the stream's events from there."""
    timeout = httpx.Timeout(10.0)
    with httpx.Client(base_url=base_url, timeout=timeout, headers=JSON) as api:
        assert (
            api.put(f"/api/v1/runs/{run_id}", json={"project": "p", "name": "n"}).status_code == 200
        )

        def post(batch_id: str, steps: list[int], values: list[float]) -> None:
            batch = point_batch(batch_id, {"loss/train": (steps, values)})
            response = api.post(f"/api/v1/runs/{run_id}/points", content=dumps(batch))
            assert response.status_code == 200

        with httpx.Client(base_url=base_url, timeout=timeout, headers=JSON) as sse:
            with sse.stream("GET", f"/api/v1/runs/{run_id}/events") as stream:
                events = _events(stream)
                first = _next_health(events)
                assert first.data["findings"] == [] and first.data["checks"]
                yield post, events


def test_health_is_pushed_when_the_findings_change(base_url: str) -> None:
    with _health_stream(base_url, "h1") as (post, events):
        post("b1", list(range(10)), [1.0] * 5 + [float("nan")] * 5)
        found = _next_health(events).data["findings"]
        assert [(f["check"], f["step"]) for f in found] == [("nonfinite-loss", 5)]


def test_a_diagnosis_that_finds_the_same_report_says_so_in_a_word(base_url: str) -> None:
    with _health_stream(base_url, "h2") as (post, events):
        steps = list(range(24))
        loss = [1.0 / (1 + step) for step in steps]  # a healthy, falling loss
        post("b1", steps[:12], loss[:12])
        assert _next_health(events).data["checks"]  # the loss's checks ran: a new report
        post("b2", steps[12:], loss[12:])
        # Diagnosed again after the new points: the same report, so only a word of it.
        deadline = time.monotonic() + 15
        while (event := next(events)).event != "health-unchanged":
            assert event.event != "health", "an unchanged report was sent again"
            assert time.monotonic() < deadline, "no word of the diagnosis"
        assert event.id is None and event.data == {}
