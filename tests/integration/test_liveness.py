"""Runs that end: a real server with a short grace period, on SQLite and PostgreSQL.

A run whose training process goes silent reads ``crashed`` in the run, the list, the status
filter and the live stream; a heartbeat or a late batch makes it ``running`` again; a finished
run stays finished; and a training process killed with SIGKILL leaves its run ``crashed``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.helpers import LiveServer, postgres_url, start_server, stop_server, wait_until
from tests.unit.server.conftest import _pg_schema_url, point_batch
from trickscope_wire import dumps

pytestmark = pytest.mark.timeout(120)

GRACE_SECONDS = 1.5
JSON = {"Content-Type": "application/json"}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LiveServer]:
    """``trickscope serve`` on a fresh database whose runs may stay silent for 1.5 s."""
    env = {"TRICKSCOPE_LIVENESS_GRACE_SECONDS": str(GRACE_SECONDS)}
    if request.param == "sqlite":
        urls: Iterator[str] = iter([f"sqlite:///{tmp_path / 'trickscope.db'}"])
    else:
        urls = _pg_schema_url(postgres_url() or "")
    url = next(urls)
    live = start_server(url, tmp_path / "server.log", env=env)
    try:
        yield live
    finally:
        stop_server(live)
        next(urls, None)  # drops the PostgreSQL schema


@pytest.fixture
def http(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers=JSON, timeout=10) as client:
        yield client


def create(http: httpx.Client, run_id: str) -> None:
    answer = http.put(f"/api/v1/runs/{run_id}", json={"project": "live", "name": run_id})
    assert answer.status_code == 200, answer.text


def status(http: httpx.Client, run_id: str) -> str:
    answer = http.get(f"/api/v1/runs/{run_id}")
    assert answer.status_code == 200, answer.text
    return str(answer.json()["status"])


def listed(http: httpx.Client, **params: str) -> dict[str, str]:
    answer = http.get("/api/v1/runs", params={"project": "live", **params})
    assert answer.status_code == 200, answer.text
    return {run["id"]: run["status"] for run in answer.json()["runs"]}


def wait_status(http: httpx.Client, run_id: str, wanted: str, timeout: float = 15) -> None:
    """Wait until the run reads ``wanted`` (an agent creates its run in the background)."""

    def reads_wanted() -> bool:
        answer = http.get(f"/api/v1/runs/{run_id}")
        return answer.status_code == 200 and answer.json()["status"] == wanted

    wait_until(
        reads_wanted,
        timeout=timeout,
        interval=0.1,
        what=f"run {run_id} to read {wanted}",
    )


def test_a_silent_run_reads_crashed_and_a_heartbeat_or_a_late_batch_revives_it(
    http: httpx.Client,
) -> None:
    for run_id in ("silent", "done"):
        create(http, run_id)
    assert http.post("/api/v1/runs/done/finish", json={"status": "finished"}).status_code == 200
    assert status(http, "silent") == "running"

    wait_status(http, "silent", "crashed")
    assert listed(http) == {"silent": "crashed", "done": "finished"}
    assert listed(http, status="crashed") == {"silent": "crashed"}
    assert listed(http, status="running") == {}
    assert listed(http, status="finished") == {"done": "finished"}

    assert http.post("/api/v1/runs/silent/heartbeat", json={}).status_code == 204
    assert status(http, "silent") == "running"
    assert listed(http, status="running") == {"silent": "running"}

    wait_status(http, "silent", "crashed")
    late = dumps(point_batch("late", {"loss": ([7], [0.25])}))
    assert http.post("/api/v1/runs/silent/points", content=late).status_code == 200
    assert status(http, "silent") == "running"
    points = http.get("/api/v1/runs/silent/points", params={"name": "loss"}).json()
    assert points["step"] == [7]

    assert status(http, "done") == "finished"  # many grace periods later


def _status_events(response: httpx.Response) -> Iterator[str]:
    event = None
    for line in response.iter_lines():
        if line.startswith("event: "):
            event = line[len("event: ") :]
        elif line.startswith("data: ") and event == "status":
            yield str(orjson.loads(line[len("data: ") :])["status"])


def test_the_live_stream_says_crashed_then_running_again(
    http: httpx.Client, server: LiveServer
) -> None:
    create(http, "r1")
    with httpx.stream("GET", f"{server.url}/api/v1/runs/r1/events", timeout=30) as response:
        assert response.status_code == 200
        events = _status_events(response)
        started = time.monotonic()
        assert next(events) == "crashed"
        assert time.monotonic() - started < GRACE_SECONDS + 10
        assert http.post("/api/v1/runs/r1/heartbeat", json={}).status_code == 204
        assert next(events) == "running"


TRAINING = textwrap.dedent(
    """
    import sys, time
    import trickscope

    run = trickscope.init(project="live", name="killed", url=sys.argv[1])
    print(run.id, flush=True)
    step = 0
    while True:  # logs until it is killed; the agent flushes every half second
        run.log({"loss/train": 1.0 / (step + 1)}, step=step)
        step += 1
        time.sleep(0.05)
    """
)


IDLE = textwrap.dedent(
    """
    import sys, time
    import trickscope

    run = trickscope.init(project="live", name="idle", url=sys.argv[1], heartbeat_secs=0.3)
    run.log({"loss/train": 1.0}, step=0)
    print(run.id, flush=True)
    time.sleep(600)  # evaluating, say: nothing logged, only heartbeats
    """
)


def test_an_idle_process_stays_running_on_heartbeats_alone_until_it_is_killed(
    http: httpx.Client, server: LiveServer, tmp_path: Path
) -> None:
    env = {**os.environ, "TRICKSCOPE_JOURNAL_DIR": str(tmp_path / "journal")}
    process = subprocess.Popen(
        [sys.executable, "-c", IDLE, server.url], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert process.stdout is not None
        run_id = process.stdout.readline().strip()
        wait_status(http, run_id, "running")
        seen = set()
        quiet_until = time.monotonic() + 3 * GRACE_SECONDS
        while time.monotonic() < quiet_until:
            seen.add(status(http, run_id))
            time.sleep(0.1)
        assert seen == {"running"}
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    wait_status(http, run_id, "crashed", timeout=GRACE_SECONDS + 15)


def test_a_training_process_killed_with_sigkill_leaves_its_run_crashed(
    http: httpx.Client, server: LiveServer, tmp_path: Path
) -> None:
    env = {**os.environ, "TRICKSCOPE_JOURNAL_DIR": str(tmp_path / "journal")}
    process = subprocess.Popen(
        [sys.executable, "-c", TRAINING, server.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        run_id = process.stdout.readline().strip()
        assert run_id, process.stderr.read() if process.stderr else ""

        def logged_steps() -> int:
            answer = http.get(f"/api/v1/runs/{run_id}/series")
            if answer.status_code != 200:
                return 0
            series = {s["name"]: s for s in answer.json()["series"]}
            return int(series.get("loss/train", {}).get("count", 0))

        wait_until(lambda: logged_steps() >= 10, timeout=30, what="the run's points to arrive")
        wait_status(http, run_id, "running")  # alive while it logs
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    assert process.returncode == -signal.SIGKILL

    wait_status(http, run_id, "crashed", timeout=GRACE_SECONDS + 15)
    assert listed(http, status="crashed") == {run_id: "crashed"}
    run = http.get(f"/api/v1/runs/{run_id}").json()
    assert run["ended_at"] is None  # nobody said it ended: the server judged it silent
    assert run["last_seen_at"] is not None

    report = tmp_path / "report.html"
    subprocess.run(
        [sys.executable, "-m", "trickscope_cli", "report", run_id, "-o", str(report)],
        env={**env, "TRICKSCOPE_URL": server.url},
        check=True,
        capture_output=True,
        timeout=60,
    )
    html = report.read_text(encoding="utf-8")
    assert '"status":"crashed"' in html and '"status":"running"' not in html
