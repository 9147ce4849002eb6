"""Compaction and digests: reads and live resumes are the same before and after merging chunks."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from tests.unit.server.conftest import JSON, point_batch
from tests.unit.server.test_server_sse import _events, base_url  # noqa: F401 (fixture)
from trickscope_server.live import feed as live_feed
from trickscope_server.services import compact, ingest, runs
from trickscope_server.storage import ChunkRow
from trickscope_wire import RankDeclare, RunCreate, dumps

pytestmark = pytest.mark.timeout(120)

NAN, INF = float("nan"), float("inf")


def _chunk_count(app: FastAPI, run_id: str) -> int:
    with app.state.db.reader() as session:
        return int(session.scalar(select(func.count()).where(ChunkRow.run_id == run_id)))


def _read(client: TestClient, run_id: str, **params: object) -> dict:  # type: ignore[type-arg]
    response = client.get(f"/api/v1/runs/{run_id}/points", params={"name": "loss", **params})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def _small_batches(post_batch: Callable[..., dict], run_id: str, n: int) -> None:  # type: ignore[type-arg]
    for b in range(n):
        steps = [b * 5 + i for i in range(5)]
        values = [float(s) for s in steps]
        if b == 7:
            values[2] = NAN
        if b == 9:
            values[0] = -INF
        if b % 10 == 3:
            steps = [s - 20 for s in steps]  # re-logged steps: this later write must win
            values = [v + 0.5 for v in values]
        post_batch(run_id, f"b{b}", {"loss": (steps, values)})


def test_compaction_keeps_every_read_identical_and_later_writes_winning(
    app: FastAPI,
    client: TestClient,
    make_run: Callable[..., dict],  # type: ignore[type-arg]
    post_batch: Callable[..., dict],  # type: ignore[type-arg]
) -> None:
    make_run("r1")
    _small_batches(post_batch, "r1", 40)  # below the automatic bound: nothing merged yet
    assert _chunk_count(app, "r1") == 40
    windows = [{}, {"start": 10, "end": 60}, {"points": 7}, {"points": 50, "start": 3}]
    before = [_read(client, "r1", wall_time="true", **w) for w in windows]
    series_before = client.get("/api/v1/runs/r1/series").json()
    assert compact.compact_run(app.state.db, run_id="r1") == 40
    assert _chunk_count(app, "r1") == 1
    after = [_read(client, "r1", wall_time="true", **w) for w in windows]
    assert after == before
    assert client.get("/api/v1/runs/r1/series").json() == series_before
    body = after[0]
    # Batch 13 re-logged steps 45..49 (values 65.5..) after batch 9 first logged them.
    assert body["value"][body["step"].index(45)] == 65.5
    assert body["step"] == sorted(set(body["step"]))
    # New points after a compaction still follow "later write wins".
    post_batch("r1", "late", {"loss": ([46], [-1.0])})
    assert _read(client, "r1", start=46, end=46)["value"] == [-1.0]


def test_ingest_compacts_a_series_after_many_small_batches(
    app: FastAPI,
    client: TestClient,
    make_run: Callable[..., dict],  # type: ignore[type-arg]
    post_batch: Callable[..., dict],  # type: ignore[type-arg]
) -> None:
    make_run("r1")
    _small_batches(post_batch, "r1", ingest.COMPACT_AFTER_CHUNKS + 6)
    # The batch that crossed the bound compacted the series after its answer.
    deadline = time.monotonic() + 10
    while _chunk_count(app, "r1") > 10:
        assert time.monotonic() < deadline, "no compaction"
        time.sleep(0.05)
    with app.state.db.reader() as session:
        from trickscope_server.storage.models import SeriesRow

        pending = session.scalar(select(SeriesRow.pending_chunks))
    assert pending is not None and pending < ingest.COMPACT_AFTER_CHUNKS


def test_a_one_step_spike_survives_a_coarse_read_through_digests(
    client: TestClient,
    make_run: Callable[..., dict],
    post_batch: Callable[..., dict],  # type: ignore[type-arg]
) -> None:
    make_run("r1")
    n, per = 200_000, 20_000
    rng = np.random.default_rng(0)
    values = rng.random(n)
    spike = 123_457
    values[spike] = 1e3
    values[150_001] = NAN
    for b in range(0, n, per):
        post_batch("r1", f"b{b}", {"loss": (list(range(b, b + per)), values[b : b + per].tolist())})
    body = _read(client, "r1", points=1000)
    assert body["downsampled"] is True
    assert body["total"] == n
    assert len(body["step"]) <= 1000
    assert spike in body["step"]
    assert body["value"][body["step"].index(spike)] == 1e3
    assert body["value"][body["step"].index(150_001)] == "NaN"
    assert body["step"][0] == 0 and body["step"][-1] == n - 1
    # A window inside one chunk is still read exactly.
    exact = _read(client, "r1", start=spike - 5, end=spike + 5)
    assert exact["step"] == list(range(spike - 5, spike + 6))
    assert exact["downsampled"] is False
    # A re-logged step inside a digested chunk: that chunk is decoded, the later write wins.
    post_batch("r1", "again", {"loss": ([spike], [-5e3])})
    body = _read(client, "r1", points=1000)
    assert body["total"] == n
    assert body["value"][body["step"].index(spike)] == -5e3
    assert 1e3 not in body["value"]


@pytest.mark.parametrize("page", [500, 2])
def test_sse_resume_across_a_compaction_gets_every_point_once(
    app: FastAPI,
    base_url: str,  # noqa: F811
    page: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(live_feed, "CHUNKS_PER_MESSAGE", page)
    timeout = httpx.Timeout(10.0)
    with httpx.Client(base_url=base_url, timeout=timeout, headers=JSON) as api:
        assert api.put("/api/v1/runs/r1", json={"project": "p", "name": "n"}).status_code == 200

        def send(b: int) -> None:
            steps = [2 * b, 2 * b + 1]
            body = dumps(point_batch(f"b{b}", {"loss": (steps, [1.0, 2.0]), "acc": ([b], [0.5])}))
            assert api.post("/api/v1/runs/r1/points", content=body).status_code == 200

        for b in range(10):
            send(b)
        cursor = api.get("/api/v1/runs/r1/points", params={"name": "loss"}).json()["cursor"]
        for b in range(10, 30):
            send(b)
        assert compact.compact_run(app.state.db, run_id="r1") == 60
        for b in range(30, 33):
            send(b)
        for after, first in ((cursor, 10), (0, 0)):
            loss: list[int] = []
            acc: list[int] = []
            ids: list[int] = []
            with httpx.Client(base_url=base_url, timeout=timeout, headers=JSON) as sse:
                params = {"after": after}
                with sse.stream("GET", "/api/v1/runs/r1/events", params=params) as stream:
                    events = _events(stream)
                    deadline = time.monotonic() + 20
                    while len(acc) < 33 - first:
                        assert time.monotonic() < deadline, f"only {acc} arrived"
                        event = next(events)
                        if event.event == "points":
                            assert event.id is not None
                            ids.append(event.id)
                            series = event.data["series"]
                            loss += series.get("loss", {}).get("step", [])
                            acc += series.get("acc", {}).get("step", [])
            assert ids == sorted(set(ids))
            assert sorted(loss) == list(range(2 * first, 66)), "a point was lost or repeated"
            assert sorted(acc) == list(range(first, 33))


def test_racing_first_puts_of_one_run_both_succeed(app: FastAPI) -> None:
    db = app.state.db
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def put(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            runs.upsert_run(db, run_id="race", payload=RunCreate(project="p", name=f"n{i}"))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=put, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    assert runs.get_run(db, run_id="race").name in {"n0", "n1", "n2", "n3"}


def test_ranks_declaring_at_the_same_moment_are_all_kept(app: FastAPI) -> None:
    """Each declaration merges into the run's ranks: without the run's write lock taken before
    the read, concurrent ones would each write back a stale copy and all but one be lost."""
    db = app.state.db
    runs.upsert_run(db, run_id="job", payload=RunCreate(project="p", name="job"))
    world_size = 12
    barrier = threading.Barrier(world_size)
    errors: list[BaseException] = []

    def declare(rank: int) -> None:
        try:
            barrier.wait(timeout=10)
            payload = RankDeclare(system={"hostname": f"node-{rank}"})
            runs.declare_rank(db, run_id="job", rank=rank, payload=payload)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=declare, args=(r,)) for r in range(world_size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    ranks = runs.get_run(db, run_id="job").ranks
    assert ranks == {str(r): {"hostname": f"node-{r}"} for r in range(world_size)}
