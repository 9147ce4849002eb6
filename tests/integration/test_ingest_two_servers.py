"""Two ``trickscope serve`` processes on one PostgreSQL database write one run in turns: each
keeps what it knows of the run between batches (``storage/ingest_state.py``), and neither lets
that make a summary or a read inexact when the other wrote in between."""

from __future__ import annotations

import http.client
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.helpers import LiveServer, postgres_url, two_servers
from tests.unit.server.conftest import _pg_schema_url
from tests.unit.server.test_ingest_state import Send, two_writers_scenario

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[LiveServer, LiveServer]]:
    for url in _pg_schema_url(postgres_url() or ""):
        with two_servers(url, tmp_path) as both:
            yield both


def _sender(server: LiveServer) -> Send:
    """Requests on one keep-alive connection, as the agent sends them."""
    parsed = urllib.parse.urlsplit(server.url)
    connection = http.client.HTTPConnection(parsed.hostname or "", parsed.port, timeout=30)

    def send(method: str, path: str, body: bytes | None) -> tuple[int, object]:
        connection.request(method, path, body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, orjson.loads(response.read())

    return send


def test_two_server_processes_writing_one_run_in_turns_keep_it_exact(
    servers: tuple[LiveServer, LiveServer],
) -> None:
    first, second = servers
    two_writers_scenario(_sender(first), _sender(second), "r1")
    assert "Traceback" not in first.log() + second.log()
