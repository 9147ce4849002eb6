"""The whole REST API fuzzed against a real server, on SQLite and PostgreSQL: zero 5xx.

Bounded for the default run (``TRICKSCOPE_FUZZ_EXAMPLES`` examples per operation and generation
mode, 20 by default: 9 to 25 s per back end on two shared cores); ``bench/fuzz_api.py`` runs
the longer campaign.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fuzzing import SERVER_ENV, fuzz_api
from tests.helpers import postgres_url, start_server, stop_server
from tests.unit.server.conftest import _pg_schema_url
from trickscope_server.app import create_app
from trickscope_server.config import Settings

EXAMPLES = int(os.environ.get("TRICKSCOPE_FUZZ_EXAMPLES", "20"))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database on each back end."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fuzz.db'}"
        return
    yield from _pg_schema_url(postgres_url() or "")


def test_no_request_gets_a_server_error(
    database_url: str, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    openapi = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'schema.db'}")).openapi()
    server = start_server(database_url, tmp_path / "server.log", env=SERVER_ENV)
    try:
        report = fuzz_api(server.url, openapi, max_examples=EXAMPLES)
    finally:
        stop_server(server)
    record_property("operations", report.operations)
    record_property("requests", report.cases)
    record_property("statuses", dict(sorted(report.statuses.items())))
    assert report.operations >= 20
    assert report.cases >= report.operations * EXAMPLES
    assert 200 in report.statuses and 422 in report.statuses  # past validation, and refused
    assert not report.failures, "\n".join(report.failures[:20]) + "\n" + server.log()[-4000:]
