"""The server's collector policy: applied by ``serve`` and by each worker's app factory."""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from trickscope_cli import serve_cmd
from trickscope_cli.quiet_server import QuietServer
from trickscope_server import gc_policy

SERVER_THRESHOLDS = (700, 10, 100)


@pytest.fixture
def collector_restored() -> Iterator[None]:
    """The policy changes process-wide state: give the test process its own back."""
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def _in_fresh_interpreter(code: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``code`` in a new Python (its collector untouched by pytest) and read its JSON."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_policy_freezes_the_live_heap_and_makes_full_collections_ten_times_rarer() -> None:
    state = _in_fresh_interpreter(
        "import gc, json\n"
        "from trickscope_server.gc_policy import apply_server_gc_policy\n"
        "before = gc.get_threshold()\n"
        "import fastapi, sqlalchemy\n"
        "apply_server_gc_policy()\n"
        "print(json.dumps({'before': before, 'after': gc.get_threshold(),"
        " 'frozen': gc.get_freeze_count()}))"
    )
    assert tuple(state["before"]) == (700, 10, 10)  # CPython's defaults, the baseline changed
    assert tuple(state["after"]) == SERVER_THRESHOLDS
    assert state["frozen"] > 10_000, state  # FastAPI's and SQLAlchemy's modules at least
    assert SERVER_THRESHOLDS == (
        gc_policy.YOUNG_THRESHOLD,
        gc_policy.MIDDLE_EVERY,
        gc_policy.FULL_EVERY,
    )


def test_serve_applies_the_policy_before_serving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, collector_restored: None
) -> None:
    served: dict[str, Any] = {}

    def serve(server: QuietServer, sockets: Any = None) -> None:  # its loop would block the test
        served.update(thresholds=gc.get_threshold(), frozen=gc.get_freeze_count())
        server.started = True

    monkeypatch.setattr(QuietServer, "run", serve)
    args = argparse.Namespace(
        database_url=f"sqlite:///{tmp_path / 'serve.db'}", host=None, port=8123, log_level="error"
    )
    assert serve_cmd.run(args) == 0
    assert served["thresholds"] == SERVER_THRESHOLDS
    assert served["frozen"] > 10_000, served


def test_each_workers_app_factory_applies_the_policy(tmp_path: Path) -> None:
    state = _in_fresh_interpreter(
        "import gc, json\n"
        "from trickscope_server.app import create_app_from_env\n"
        "app = create_app_from_env()\n"
        "app.state.db.dispose()\n"
        "print(json.dumps({'thresholds': gc.get_threshold(), 'frozen': gc.get_freeze_count()}))",
        env={"TRICKSCOPE_DATABASE_URL": f"sqlite:///{tmp_path / 'worker.db'}"},
    )
    assert tuple(state["thresholds"]) == SERVER_THRESHOLDS
    assert state["frozen"] > 10_000, state
