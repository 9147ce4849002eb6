"""``trickscope serve``: what the command sets up before it hands the app to uvicorn."""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from trickscope_cli import serve_cmd
from trickscope_cli.quiet_server import TICK_SECONDS, QuietServer


def test_serve_freezes_the_startup_heap_out_of_the_cyclic_collector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served: dict[str, Any] = {}

    def serve(server: QuietServer, sockets: Any = None) -> None:  # its loop would block the test
        served.update(app=server.config.app, frozen=gc.get_freeze_count(), port=server.config.port)
        server.started = True

    monkeypatch.setattr(QuietServer, "run", serve)
    args = argparse.Namespace(
        database_url=f"sqlite:///{tmp_path / 'serve.db'}", host=None, port=8123, log_level="error"
    )
    try:
        assert serve_cmd.run(args) == 0
    finally:
        gc.unfreeze()
    # The app, SQLAlchemy and FastAPI are in the permanent generation when serving starts: a
    # full collection no longer scans them (~50 ms per collection on this machine otherwise).
    assert served["frozen"] > 10_000, served
    assert served["port"] == 8123


def test_the_quiet_server_wakes_once_a_second_and_at_once_on_a_signal() -> None:
    """Its idle loop sleeps a second, not uvicorn's 0.1 s; an exit signal ends it at once."""

    async def app(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover
        raise AssertionError("no request is made")

    server = QuietServer(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error"))
    ticks: list[float] = []
    on_tick = server.on_tick

    async def counted(counter: int) -> bool:
        ticks.append(time.monotonic())
        return await on_tick(counter)

    server.on_tick = counted  # type: ignore[method-assign]
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    time.sleep(2.5)
    assert 2 <= len(ticks) <= 4  # uvicorn's own loop: ~25
    asked = time.monotonic()
    server.handle_exit(signal.SIGTERM, None)
    thread.join(timeout=5)
    assert not thread.is_alive() and ticks[-1] - asked < TICK_SECONDS / 2
