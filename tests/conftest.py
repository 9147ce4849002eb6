"""Fixtures shared by every test layer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import LiveServer, start_server, stop_server


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[LiveServer]:
    """A real server process with its own SQLite file."""
    server = start_server(f"sqlite:///{tmp_path / 'trickscope.db'}", tmp_path / "server.log")
    yield server
    stop_server(server)
