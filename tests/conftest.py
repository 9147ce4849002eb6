"""Fixtures shared by every test layer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import LiveServer, start_server, stop_server


@pytest.fixture(autouse=True, scope="session")
def _journal_outside_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Runs that name no journal folder (and the processes tests start) spill into one of the
    session's, never the user's cache: what a test leaves there is no later run's leftover."""
    patch = pytest.MonkeyPatch()
    patch.setenv("TRICKSCOPE_JOURNAL_DIR", str(tmp_path_factory.mktemp("journal")))
    yield
    patch.undo()


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[LiveServer]:
    """A real server process with its own SQLite file."""
    server = start_server(f"sqlite:///{tmp_path / 'trickscope.db'}", tmp_path / "server.log")
    yield server
    stop_server(server)
