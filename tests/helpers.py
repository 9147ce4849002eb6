"""Helpers shared by every test layer: free ports, polling, a real server process, PostgreSQL."""

from __future__ import annotations

import asyncio
import importlib
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"
PG_URL_ENV = "TRICKSCOPE_TEST_PG_URL"
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class WatcherReports:
    """What a ``Watcher`` emits, kept as ``{series: {step: value}}`` (pass it as ``emit``)."""

    def __init__(self) -> None:
        self.points: dict[str, dict[int, float]] = {}

    def __call__(self, step: int, keys: Any, values: Any, host: Any) -> None:
        for key, value in zip(keys, values.tolist(), strict=True):
            self.points.setdefault(key, {})[step] = value


def rank_env(rank: int, world_size: int, port: str) -> dict[str, str]:
    """The environment ``torchrun`` gives one rank of a job on this machine (one thread each)."""
    return {
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "WORLD_SIZE": str(world_size),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": port,
        "OMP_NUM_THREADS": "1",
    }


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def import_or_skip(name: str) -> Any:
    """``pytest.importorskip``, except under CI=true: the README's setup command installs every
    integration the tests use, so there a missing one fails instead of skipping."""
    if IN_CI:
        return importlib.import_module(name)
    return pytest.importorskip(name)


def postgres_url() -> str | None:
    """The test PostgreSQL URL; under CI=true its absence fails the run instead of skipping."""
    url = os.environ.get(PG_URL_ENV)
    if not url:
        if IN_CI:
            pytest.fail(f"CI=true but {PG_URL_ENV} is not set: PostgreSQL tests must run in CI")
        pytest.skip(f"{PG_URL_ENV} not set")
    return url


@dataclass
class LiveServer:
    """A real ``trickscope serve`` process on a free loopback port."""

    url: str
    database_url: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start_server(
    database_url: str, log_path: Path, *, port: int | None = None, env: dict[str, str] | None = None
) -> LiveServer:
    """Start ``trickscope serve`` on ``port`` (default: a free one) and wait until it answers."""
    port = port or free_port()
    command = [
        sys.executable,
        "-m",
        "trickscope_cli",
        "serve",
        "--db",
        database_url,
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    log_file = log_path.open("wb")
    process = subprocess.Popen(
        command, stdout=log_file, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
    )
    url = f"http://127.0.0.1:{port}"
    server = LiveServer(url=url, database_url=database_url, process=process, log_path=log_path)
    try:
        wait_until(
            lambda: process.poll() is not None or _healthy(url), timeout=30, what=f"server at {url}"
        )
    except TimeoutError:
        stop_server(server)
        raise
    if process.poll() is not None:
        raise RuntimeError(f"server exited with {process.returncode}:\n{server.log()}")
    return server


def stop_server(server: LiveServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(timeout=10)


@contextmanager
def two_servers(database_url: str, logs: Path) -> Iterator[tuple[LiveServer, LiveServer]]:
    """Two ``trickscope serve`` processes on one database, logging to ``logs/first.log`` and
    ``logs/second.log``; both stopped on exit."""
    first = start_server(database_url, logs / "first.log")
    try:
        second = start_server(database_url, logs / "second.log")
        try:
            yield first, second
        finally:
            stop_server(second)
    finally:
        stop_server(first)


def run_async(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``main()`` to completion on a fresh event loop in a thread of its own.

    ``asyncio.run`` refuses to start where a loop is already running in the calling thread, as
    Playwright's sync API leaves one for the whole browser session.
    """
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = asyncio.run(main())
        except BaseException as exc:  # re-raised in the calling thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="test-event-loop")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
