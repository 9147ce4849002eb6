"""A run with a live stream is marked followed, and each point batch's answer says so: the
agent's cue to send at its fast cadence. The mark is renewed while a stream lasts and lapses
after the last one leaves. An agent that waits for a follower (``GET /followed?wait=``) is
answered as soon as a stream opens."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from unittest import mock

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from tests.helpers import run_async, wait_until
from tests.unit.server.conftest import JSON, point_batch
from tests.unit.server.test_server_sse import base_url  # noqa: F401 (fixture)
from trickscope_server.live import Broadcaster, feed, read_follows
from trickscope_server.live import seen as seen_module
from trickscope_server.services import liveness, runs
from trickscope_server.storage import RunRow
from trickscope_server.storage import runs as run_store
from trickscope_wire import RunCreate, RunFinish, dumps

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


def _wait_followed(server: str, run_id: str, wait: float) -> tuple[object, float]:
    """GET /followed?wait=…: the answer (or the status of a refusal) and the seconds it took."""
    started = time.monotonic()
    with httpx.Client(base_url=server, timeout=wait + 10) as client:
        response = client.get(f"/api/v1/runs/{run_id}/followed", params={"wait": wait})
    answer = response.json() if response.status_code == 200 else response.status_code
    return answer, time.monotonic() - started


def _held_wait(app: FastAPI, server: str) -> tuple[threading.Thread, list[tuple[object, float]]]:
    """Run "r" created, and a 30 s wait for a follower held on it: the waiting thread, and the
    list its answer goes into."""
    runs.upsert_run(app.state.db, run_id="r", payload=RunCreate(project="p", name="n"))
    answers: list[tuple[object, float]] = []
    waiter = threading.Thread(target=lambda: answers.append(_wait_followed(server, "r", 30)))
    waiter.start()
    wait_until(lambda: app.state.broadcaster._follow_waits, what="the wait to be held")
    return waiter, answers


def test_a_wait_for_a_follower_ends_as_soon_as_a_stream_opens(
    app: FastAPI,
    base_url: str,  # noqa: F811
) -> None:
    waiter, answers = _held_wait(app, base_url)
    with httpx.Client(base_url=base_url, timeout=10) as client:
        with client.stream("GET", "/api/v1/runs/r/events") as stream:
            assert stream.status_code == 200
            waiter.join(timeout=20)
    assert answers and answers[0][0] == {"followed": True, "glanced": False}
    assert answers[0][1] < 10  # the stream ended it, not its 30 s
    # Followed now: answered at once, however long the wait asked for.
    assert _wait_followed(base_url, "r", 30)[0] == {"followed": True, "glanced": False}
    assert not app.state.broadcaster._follow_waits  # every wait was let go


def test_a_wait_nobody_ends_says_not_followed_after_its_seconds(
    app: FastAPI,
    base_url: str,  # noqa: F811
) -> None:
    runs.upsert_run(app.state.db, run_id="r", payload=RunCreate(project="p", name="n"))
    answer, took = _wait_followed(base_url, "r", 0.4)
    assert answer == {"followed": False, "glanced": False} and took >= 0.4
    answer, took = _wait_followed(base_url, "r", 0)
    assert answer == {"followed": False, "glanced": False} and took < 5
    assert not app.state.broadcaster._follow_waits


def test_a_read_of_a_running_runs_data_counts_as_following_it_and_ends_the_wait(
    app: FastAPI,
    base_url: str,  # noqa: F811
) -> None:
    """A script polling ``/points`` has no stream: its reads bring the agent's fast cadence."""
    waiter, answers = _held_wait(app, base_url)
    with httpx.Client(base_url=base_url, timeout=10) as client:
        client.get("/api/v1/runs/r/points", params={"name": "loss"})
    waiter.join(timeout=20)
    assert answers and answers[0][0] == {"followed": True, "glanced": False} and answers[0][1] < 10
    assert (_followed_until(app, "r") or 0) > time.time() + 20

    runs.upsert_run(app.state.db, run_id="done", payload=RunCreate(project="p", name="n"))
    runs.finish_run(app.state.db, run_id="done", payload=RunFinish(status="finished"))
    with httpx.Client(base_url=base_url, timeout=10) as client:
        for route in ("points?name=loss", "health", "heatmap?family=grad_norm", "histograms"):
            client.get(f"/api/v1/runs/done/{route}")
    assert not _followed_until(app, "done")  # nothing to follow in a finished run


def test_a_comparison_counts_as_following_each_running_run_it_reads_and_a_refused_one_not(
    app: FastAPI,
    base_url: str,  # noqa: F811
) -> None:
    runs.upsert_run(app.state.db, run_id="other", payload=RunCreate(project="p", name="o"))
    waiter, answers = _held_wait(app, base_url)
    with httpx.Client(base_url=base_url, timeout=10) as client:
        refused = client.get("/api/v1/compare/series", params={"runs": "r,nope", "name": "loss"})
        assert refused.status_code == 404  # an unknown run: nothing read, nothing marked
        assert not _followed_until(app, "r")
        read = client.get("/api/v1/compare/series", params={"runs": "r,other", "name": "loss"})
        assert read.status_code == 200, read.text
    waiter.join(timeout=20)
    assert answers and answers[0][0] == {"followed": True, "glanced": False} and answers[0][1] < 10
    for run_id in ("r", "other"):
        assert (_followed_until(app, run_id) or 0) > time.time() + 20


def test_the_runs_list_and_a_runs_record_glance_at_running_runs_without_following_them(
    app: FastAPI,
    base_url: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Listed, or read by id, a running run's wait ends with ``glanced`` (its agent sends what
    it holds), at most once per GLANCE_RENEW_SECONDS; the run is not marked followed, and a
    finished one is left alone."""
    monkeypatch.setattr(read_follows, "GLANCE_RENEW_SECONDS", 1.5)
    runs.upsert_run(app.state.db, run_id="done", payload=RunCreate(project="p", name="d"))
    runs.finish_run(app.state.db, run_id="done", payload=RunFinish(status="finished"))
    waiter, answers = _held_wait(app, base_url)
    broadcaster = app.state.broadcaster
    with (
        mock.patch.object(broadcaster, "glanced", wraps=broadcaster.glanced) as glanced,
        httpx.Client(base_url=base_url, timeout=10) as client,
    ):
        listed = client.get("/api/v1/runs")
        assert listed.status_code == 200, listed.text
        assert {run["id"] for run in listed.json()["runs"]} == {"r", "done"}
        waiter.join(timeout=20)
        assert answers and answers[0][0] == {"followed": False, "glanced": True}
        assert answers[0][1] < 10  # the list ended it, not its 30 s
        assert glanced.call_args_list == [mock.call("r")]  # the running run alone
        assert not _followed_until(app, "r")  # a glance is not following

        # Listed again within the renewal: the next wait is left alone.
        waiter, answers = _held_wait(app, base_url)
        assert client.get("/api/v1/runs").status_code == 200
        time.sleep(0.3)
        assert waiter.is_alive() and glanced.call_count == 1
        time.sleep(1.5)
        assert client.get("/api/v1/runs").status_code == 200  # past it: glanced again
        waiter.join(timeout=20)
        assert answers and answers[0][0] == {"followed": False, "glanced": True}
        assert glanced.call_count == 2

        # One run's own page of the API shows its progress too: a glance, not a follow.
        time.sleep(1.5)
        waiter, answers = _held_wait(app, base_url)
        assert client.get("/api/v1/runs/done").status_code == 200  # finished: left alone
        assert client.get("/api/v1/runs/r").status_code == 200
        waiter.join(timeout=20)
        assert answers and answers[0][0] == {"followed": False, "glanced": True}
        assert glanced.call_count == 3 and not _followed_until(app, "r")


def _last_seen(app: FastAPI, run_id: str) -> float | None:
    with app.state.db.reader() as session:
        value: float | None = session.scalar(select(RunRow.last_seen_at).where(RunRow.id == run_id))
    return value


def test_a_wait_says_the_run_is_alive_as_a_heartbeat_does_and_a_plain_look_does_not(
    app: FastAPI,
    base_url: str,  # noqa: F811
) -> None:
    runs.upsert_run(app.state.db, run_id="r", payload=RunCreate(project="p", name="n"))
    with app.state.db.transaction() as session:
        session.execute(update(RunRow).where(RunRow.id == "r").values(last_seen_at=1.0))
    assert _wait_followed(base_url, "r", 0)[0] == {"followed": False, "glanced": False}
    assert _last_seen(app, "r") == 1.0  # a look (wait=0) is anyone's: it stamps nothing
    started = time.time()
    assert _wait_followed(base_url, "r", 0.1)[0] == {"followed": False, "glanced": False}
    seen = _last_seen(app, "r")
    assert seen is not None and started - 1 <= seen <= time.time()


@pytest.mark.parametrize(
    ("query", "status"),
    [("wait=-1", 422), ("wait=3601", 422), ("wait=nan", 422), ("wait=soon", 422), ("", 404)],
)
def test_a_wait_for_an_unknown_run_or_out_of_bounds_is_a_problem(
    app: FastAPI,
    client: TestClient,
    query: str,
    status: int,
) -> None:
    runs.upsert_run(app.state.db, run_id="r", payload=RunCreate(project="p", name="n"))
    run_id = "gone" if status == 404 else "r"
    response = client.get(f"/api/v1/runs/{run_id}/followed?{query}")
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert not app.state.broadcaster._follow_waits


def _long_wait(
    app: FastAPI, server: str, wait: float, *, keepalive: float, grace: float
) -> tuple[threading.Thread, list[tuple[float, bytes]]]:
    """Run "r" created on a server with these keep-alive and grace seconds, and a wait of
    ``wait`` seconds held on it: the waiting thread, and the chunks of its answer."""
    app.state.settings = app.state.settings.model_copy(
        update={"follow_keepalive_seconds": keepalive, "liveness_grace_seconds": grace}
    )
    runs.upsert_run(app.state.db, run_id="r", payload=RunCreate(project="p", name="n"))
    chunks: list[tuple[float, bytes]] = []
    waiter = threading.Thread(target=_held_long, args=(server, "r", wait, chunks))
    waiter.start()
    return waiter, chunks


def _held_long(server: str, run_id: str, wait: float, chunks: list[tuple[float, bytes]]) -> None:
    """A long wait read as it arrives: (monotonic time, bytes) of each chunk into ``chunks``."""
    with httpx.Client(base_url=server, timeout=wait + 10) as client:
        url = f"/api/v1/runs/{run_id}/followed"
        with client.stream("GET", url, params={"wait": wait}) as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == "application/json"
            chunks.append((time.monotonic(), b""))  # the headers came at once
            for chunk in response.iter_raw():
                chunks.append((time.monotonic(), chunk))


def test_a_long_wait_keeps_its_connection_busy_and_its_run_alive_until_a_follower_comes(
    app: FastAPI,
    base_url: str,  # noqa: F811
) -> None:
    """A wait longer than ``follow_keepalive_seconds`` sends a space every keep-alive (a proxy
    sees a busy connection) and stamps the run seen while nothing else does, so that the run
    never reads crashed; a follower ends it with the JSON answer."""
    started = time.monotonic()
    waiter, chunks = _long_wait(app, base_url, 600, keepalive=0.2, grace=0.9)
    stamps: set[float] = set()
    while time.monotonic() - started < 2.0:  # more than two graces
        seen = _last_seen(app, "r")
        assert seen is not None and time.time() - seen < 0.9, "the run went unseen a grace"
        stamps.add(seen)
        time.sleep(0.05)
    assert len(stamps) >= 4  # stamped while held, with no request from the agent
    app.state.broadcaster.followed("r")  # a page opened
    waiter.join(timeout=10)
    body = b"".join(chunk for _, chunk in chunks)
    assert chunks[0][0] - started < 0.5  # the headers came at once
    assert body.strip() == b'{"followed":true,"glanced":false}'
    assert set(body[: body.index(b"{")]) == {ord(" ")}
    assert 6 <= body.index(b"{") <= 14  # a space per 0.2 s keep-alive, over ~2 s
    assert json.loads(body) == {"followed": True, "glanced": False}
    assert not app.state.broadcaster._follow_waits


def test_a_long_wait_costs_no_stamp_while_the_runs_batches_stamp_it(
    app: FastAPI,
    base_url: str,  # noqa: F811
) -> None:
    """The run's point batches stamp it seen: the wait adds no write while they come."""
    stamped: list[str] = []
    heartbeat = liveness.heartbeat

    def counted(db: object, *, run_id: str) -> None:
        stamped.append(run_id)
        heartbeat(db, run_id=run_id)  # type: ignore[arg-type]

    with mock.patch.object(liveness, "heartbeat", counted):
        waiter, chunks = _long_wait(app, base_url, 1.5, keepalive=0.2, grace=0.9)
        with httpx.Client(base_url=base_url, timeout=10, headers=JSON) as client:
            for step in range(20):
                _post(client, "r", f"b{step}", step)
                time.sleep(0.07)
        waiter.join(timeout=10)
    body = b"".join(chunk for _, chunk in chunks)
    assert json.loads(body) == {"followed": False, "glanced": False} and body.startswith(b" ")
    assert stamped == []


def test_a_long_wait_on_a_run_deleted_meanwhile_ends_not_followed(
    app: FastAPI,
    base_url: str,  # noqa: F811
) -> None:
    waiter, chunks = _long_wait(app, base_url, 600, keepalive=0.1, grace=30)
    wait_until(lambda: len(chunks) >= 2, what="a keep-alive space")
    with httpx.Client(base_url=base_url, timeout=10) as client:
        assert client.delete("/api/v1/runs/r").status_code in (200, 204)
    waiter.join(timeout=10)
    assert not waiter.is_alive()
    assert json.loads(b"".join(chunk for _, chunk in chunks)) == {
        "followed": False,
        "glanced": False,
    }


def test_seen_stamps_know_this_process_stamps_and_forget_the_old_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [100.0]
    monkeypatch.setattr(seen_module.time, "monotonic", lambda: clock[0])
    stamps = seen_module.SeenStamps(forget_after=10)
    assert stamps.age("r") == float("inf")
    stamps.note("r")
    clock[0] += 4
    assert stamps.age("r") == 4
    stamps.note("other")
    clock[0] += 7  # "r" is 11 s old, past forget_after: the next note prunes it
    stamps.note("third")
    assert stamps.age("r") == float("inf") and stamps.age("other") == 7
    assert set(stamps._stamped) == {"other", "third"}
