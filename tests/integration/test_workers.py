"""``trickscope serve --workers N``: real worker processes on PostgreSQL, refused on SQLite.

Which worker serves a connection is read from the operating system (the worker process that
holds the connection's server side), so the server needs no extra header to be told apart.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import psutil
import pytest

from tests.helpers import free_port, postgres_url, wait_until
from tests.integration.test_auth_matrix import compose_server_env
from tests.unit.server.conftest import point_batch
from trickscope_server.security.sessions import COOKIE_NAME
from trickscope_wire import dumps

pytestmark = pytest.mark.timeout(120)

TOKEN = "w" * 48
LIVE_TARGET_SECONDS = 1.0


def serve(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """``trickscope serve`` as docker-compose.yml runs it: settings from the environment."""
    return subprocess.Popen(
        [sys.executable, "-m", "trickscope_cli", "serve", *args],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_several_workers_on_sqlite_are_refused_with_the_reason(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'trickscope.db'}"
    process = serve({}, "--db", db, "--workers", "2", "--port", str(free_port()))
    _, err = process.communicate(timeout=60)
    assert process.returncode == 2
    assert "refusing --workers 2 on SQLite" in err and "one writer at a time" in err


class Connection:
    """One keep-alive connection to the server, and the worker process that accepted it."""

    def __init__(self, port: int, workers: list[psutil.Process]) -> None:
        self.http = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.request("GET", "/healthz")  # answered: a worker has accepted the connection
        local_port = self.http.sock.getsockname()[1]
        owners = [w.pid for w in workers if _holds(w, local_port)]
        assert len(owners) == 1, f"connection from port {local_port} held by {owners}"
        self.worker = owners[0]

    def request(
        self, method: str, path: str, body: bytes | None = None
    ) -> tuple[int, bytes, http.client.HTTPMessage]:
        auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        self.http.request(method, path, body=body, headers=auth)
        response = self.http.getresponse()
        return response.status, response.read(), response.headers


def _holds(worker: psutil.Process, client_port: int) -> bool:
    return any(
        c.raddr and c.raddr.port == client_port and c.status == psutil.CONN_ESTABLISHED
        for c in worker.net_connections(kind="tcp")
    )


class EventStream:
    """An SSE stream of one run read line by line, on a connection of its own."""

    def __init__(self, connection: Connection, run_id: str) -> None:
        self.worker = connection.worker
        headers = {"Authorization": f"Bearer {TOKEN}", "Accept": "text/event-stream"}
        connection.http.request("GET", f"/api/v1/runs/{run_id}/events", headers=headers)
        self.response = connection.http.getresponse()
        assert self.response.status == 200

    def steps(self) -> Iterator[int]:
        """Steps of ``loss`` in the order the points events bring them."""
        event = ""
        while line := self.response.fp.readline():
            text = line.decode().rstrip("\n")
            if text.startswith("event: "):
                event = text[len("event: ") :]
            elif text.startswith("data: ") and event == "points":
                yield from orjson.loads(text[len("data: ") :])["series"]["loss"]["step"]


def compose_environment(values: dict[str, str]) -> dict[str, str]:
    """The server's environment in docker-compose.yml with ``${NAME:-default}`` and
    ``${NAME:?message}`` substituted as compose does, from ``values`` (an ``.env`` file)."""
    resolved = {}
    for key, raw in compose_server_env().items():
        text = str(raw)
        match = re.fullmatch(r"\$\{(\w+):([-?])(.*)\}", text)
        if match is None:
            resolved[key] = text
            continue
        name, kind, rest = match.groups()
        if values.get(name):
            resolved[key] = values[name]
        else:
            assert kind == "-", f"compose stops without {name}: {rest}"
            resolved[key] = rest
    return resolved


def test_compose_runs_several_workers_from_the_env_file_that_the_example_documents() -> None:
    env = compose_environment({"TRICKSCOPE_TOKEN": TOKEN})
    assert int(env["TRICKSCOPE_WORKERS"]) > 1
    assert env["TRICKSCOPE_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert (
        compose_environment({"TRICKSCOPE_TOKEN": TOKEN, "TRICKSCOPE_WORKERS": "3"})[
            "TRICKSCOPE_WORKERS"
        ]
        == "3"
    )
    example = (Path(__file__).resolve().parents[2] / ".env.example").read_text()
    assert "\nTRICKSCOPE_WORKERS=" in example


@pytest.fixture
def workers_server() -> Iterator[tuple[subprocess.Popen[str], int, list[psutil.Process]]]:
    """``trickscope serve`` (the image's command) with docker-compose.yml's environment, two
    workers and the test PostgreSQL in place of the compose database host."""
    port = free_port()
    env = compose_environment({"TRICKSCOPE_TOKEN": TOKEN, "TRICKSCOPE_WORKERS": "2"})
    assert env["TRICKSCOPE_SESSION_SECRET"] == ""  # the workers must make and share one
    env |= {"TRICKSCOPE_DATABASE_URL": postgres_url() or "", "TRICKSCOPE_PORT": str(port)}
    process = serve(env)
    parent = psutil.Process(process.pid)

    def workers() -> list[psutil.Process]:
        return [
            child
            for child in parent.children()
            if "spawn_main" in " ".join(child.cmdline()) and any(child.net_connections("tcp"))
        ]

    try:
        wait_until(
            lambda: process.poll() is not None or len(workers()) == 2,
            timeout=60,
            what="two listening workers",
        )
        assert process.poll() is None, process.communicate()
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        wait_until(lambda: _answers(connection), timeout=60, what="the server")
        yield process, port, workers()
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=20)


def _answers(connection: http.client.HTTPConnection) -> bool:
    try:
        connection.request("GET", "/healthz")
        return connection.getresponse().status == 200
    except OSError:
        connection.close()
        return False


@pytest.mark.postgres
def test_two_workers_share_ingest_live_streams_and_sessions_and_stop_together(
    workers_server: tuple[subprocess.Popen[str], int, list[psutil.Process]],
) -> None:
    process, port, workers = workers_server
    run_id = uuid.uuid4().hex
    viewer = Connection(port, workers)
    status, _, _ = viewer.request(
        "PUT", f"/api/v1/runs/{run_id}", orjson.dumps({"project": "workers", "name": "live"})
    )
    assert status == 200
    stream = EventStream(viewer, run_id)
    steps = stream.steps()

    # Ingest through fresh connections until both workers took batches; every point must reach
    # the stream (held by one of them) within the live target, whichever worker stored it.
    ingested_by: list[int] = []
    step = 0
    while step < 12 or set(ingested_by) != {w.pid for w in workers}:
        assert step < 200, f"every connection went to the same worker: {set(ingested_by)}"
        writer = Connection(port, workers)
        body = dumps(point_batch(f"b{step}", {"loss": ([step], [1.0 / (step + 1)])}))
        sent = time.monotonic()
        status, answer, _ = writer.request("POST", f"/api/v1/runs/{run_id}/points", body)
        assert status == 200, answer
        assert next(steps) == step
        delay = time.monotonic() - sent
        assert delay <= LIVE_TARGET_SECONDS, f"step {step} via worker {writer.worker}: {delay}s"
        ingested_by.append(writer.worker)
        writer.http.close()
        step += 1
    assert stream.worker in ingested_by and set(ingested_by) - {stream.worker}

    # A dashboard session made by one worker is honoured by the other.
    login = Connection(port, workers)
    status, _, headers = login.request("POST", "/api/v1/session", orjson.dumps({"token": TOKEN}))
    assert status == 200
    cookie = headers["set-cookie"].split(";")[0]
    assert cookie.startswith(f"{COOKIE_NAME}=")
    while (other := Connection(port, workers)).worker == login.worker:
        other.http.close()
    other.http.request("GET", "/api/v1/session", headers={"Cookie": cookie})
    state = orjson.loads(other.http.getresponse().read())
    assert state["logged_in"] is True

    # SIGTERM to the parent stops every worker.
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=20)
    assert process.returncode == 0
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive
