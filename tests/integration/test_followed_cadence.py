"""The real agent against real servers: while nobody follows its run it sends at its slow
cadence; a live stream on the run, held by this server or by another process on the same
PostgreSQL database, brings the fast cadence back at once (the agent's held wait for a follower
is answered), not at the next slow flush; a runs list that shows the run, on either server, has
the agent send what it holds once and keep its slow cadence; every point arrives either way."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import trickscope
from tests.helpers import (
    LiveServer,
    postgres_url,
    start_server,
    stop_server,
    two_servers,
    wait_until,
)
from tests.unit.server.conftest import _pg_schema_url

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def servers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[LiveServer, ...]]:
    """SQLite: one server, agent and stream on it. PostgreSQL: two processes on one database,
    the agent on the first and the stream on the second."""
    if request.param == "sqlite":
        server = start_server(f"sqlite:///{tmp_path / 'one.db'}", tmp_path / "one.log")
        try:
            yield server, server
        finally:
            stop_server(server)
        return
    for url in _pg_schema_url(postgres_url() or ""):
        with two_servers(url, tmp_path) as both:
            yield both


def _slow_when_unfollowed(server: LiveServer, tmp_path: Path) -> trickscope.Run:
    """A run on ``server`` that sends every 0.05 s while followed, every 60 s otherwise."""
    return trickscope.init(
        project="p",
        url=server.url,
        journal_dir=tmp_path / "journal",
        flush_secs=0.05,
        unfollowed_flush_secs=60,
        stats_flush_secs=60,  # which would otherwise flush the logged points too, every 5 s
        quiet=True,
    )


def _finish_with_every_step(
    run: trickscope.Run, steps: int, ingest: LiveServer, viewer: LiveServer
) -> None:
    """Finish the run; every one of its ``steps`` is stored, and neither server failed."""
    run.finish()
    url = f"{ingest.url}/api/v1/runs/{run.id}/points?name=loss&points=100000"
    with urllib.request.urlopen(url, timeout=10) as response:
        stored = json.loads(response.read())
    assert stored["step"] == list(range(steps)) and not stored["downsampled"]
    assert "Traceback" not in ingest.log() + viewer.log()


def test_a_live_stream_on_any_server_brings_the_agent_back_to_its_fast_cadence(
    servers: tuple[LiveServer, LiveServer], tmp_path: Path
) -> None:
    ingest, viewer = servers
    run = _slow_when_unfollowed(ingest, tmp_path)
    delivery = run.sender.delivery  # type: ignore[union-attr]
    step = 0

    def log_then(predicate: object) -> bool:
        nonlocal step
        run.log({"loss": float(step)}, step=step)
        step += 1
        return bool(predicate())  # type: ignore[operator]

    # Nobody follows the run: the first answer says so, the agent slows down and waits.
    wait_until(lambda: log_then(lambda: not delivery.followed), what="an unfollowed answer")
    assert run.sender.flush_interval() == 60  # type: ignore[union-attr]
    sent = run.sender.delivered  # type: ignore[union-attr]
    with httpx.Client(base_url=viewer.url, timeout=10) as client:
        with client.stream("GET", f"/api/v1/runs/{run.id}/events") as stream:
            assert stream.status_code == 200
            opened = time.monotonic()
            # Within the test's 10 s, far under the slow cadence's 60 s: the wait was answered.
            wait_until(lambda: log_then(lambda: delivery.followed), what="the follower")
            wait_until(lambda: run.sender.delivered > sent, what="the held points sent")  # type: ignore[union-attr]
            assert time.monotonic() - opened < 10
            assert run.sender.flush_interval() == 0.05  # type: ignore[union-attr]
    _finish_with_every_step(run, step, ingest, viewer)


def test_the_runs_list_on_any_server_has_the_agent_send_what_it_holds_and_stay_slow(
    servers: tuple[LiveServer, LiveServer], tmp_path: Path
) -> None:
    ingest, viewer = servers
    run = _slow_when_unfollowed(ingest, tmp_path)
    delivery = run.sender.delivery  # type: ignore[union-attr]
    run.log({"loss": 0.0}, step=0)
    wait_until(lambda: not delivery.followed, what="an unfollowed answer")
    watch = run.sender.follow_watch  # type: ignore[union-attr]
    wait_until(lambda: watch is not None and watch.vouches, what="the wait for a follower")
    for step in range(1, 20):
        run.log({"loss": float(step)}, step=step)

    def last_step() -> int | None:
        listed = httpx.get(f"{viewer.url}/api/v1/runs", params={"project": "p"}, timeout=10)
        assert listed.status_code == 200, listed.text
        (shown,) = [r for r in listed.json()["runs"] if r["id"] == run.id]
        assert shown["status"] == "running"
        return shown["last_step"]  # type: ignore[no-any-return]

    assert last_step() != 19  # held: the slow cadence is 60 s; the list glanced at the run
    opened = time.monotonic()
    # Within the test's 10 s, far under the slow cadence's 60 s: a refreshed list shows it.
    wait_until(lambda: last_step() == 19, what="the held points sent")
    assert time.monotonic() - opened < 10
    assert not delivery.followed and run.sender.flush_interval() == 60  # type: ignore[union-attr]
    _finish_with_every_step(run, 20, ingest, viewer)
