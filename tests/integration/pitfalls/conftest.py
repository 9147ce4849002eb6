"""One real server (its own SQLite file) for every script in this directory: each script is its
own run, so they need not each pay a server start."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers import LiveServer, start_server, stop_server


@pytest.fixture(scope="package")
def pitfall_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    path = tmp_path_factory.mktemp("pitfalls")
    server = start_server(f"sqlite:///{path / 'trickscope.db'}", path / "server.log")
    yield server
    stop_server(server)
