"""``trickscope serve``: what the command sets up before it hands the app to uvicorn."""

from __future__ import annotations

import argparse
import gc
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from trickscope_cli import serve_cmd


def test_serve_freezes_the_startup_heap_out_of_the_cyclic_collector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served: dict[str, Any] = {}

    def serve(app: Any, **options: Any) -> None:  # uvicorn's event loop would block the test
        served.update(app=app, frozen=gc.get_freeze_count(), **options)

    monkeypatch.setattr(uvicorn, "run", serve)
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
