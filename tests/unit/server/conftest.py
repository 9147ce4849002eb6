"""Fixtures for the server's unit tests: one database per test, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import make_url

from trickscope_server.app import create_app
from trickscope_server.config import Settings
from trickscope_wire import PointBatch, SeriesColumns, dumps, encode_f64, encode_i64

PG_ENV = "TRICKSCOPE_TEST_PG_URL"
# Every body is JSON, as the server requires (the agent sends the same header).
JSON = {"Content-Type": "application/json"}


def _pg_schema_url(base: str) -> Iterator[str]:
    """A fresh schema per test (dropped afterwards), so tests are isolated and re-runnable."""
    url = make_url(base)
    plain = url.set(drivername="postgresql").render_as_string(hide_password=False)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(plain, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{PG_ENV} is set but PostgreSQL is unreachable: {exc}")
        pytest.skip(f"PostgreSQL unreachable: {exc}")
    with admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            yield url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
                hide_password=False
            )
        finally:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database URL with an empty database behind it."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'trickscope.db'}"
        return
    base = os.environ.get(PG_ENV)
    if not base:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{PG_ENV} must be set when CI=true")
        pytest.skip(f"{PG_ENV} is not set")
    yield from _pg_schema_url(base)


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    """Settings for a test server with a small dashboard in ``tmp_path/web``."""
    web = tmp_path / "web"
    web.mkdir()
    (web / "index.html").write_text("<!doctype html><title>runs</title>")
    (web / "run.html").write_text("<!doctype html><title>run</title>")
    (web / "app.js").write_text("export const x = 1;\n")
    return Settings(
        database_url=db_url,
        web_dir=web,
        max_body_bytes=1 << 20,
        max_batch_points=100_000,
        sse_poll_seconds=0.2,
        sse_keepalive_seconds=0.5,
        sse_health_seconds=0.2,
        allowed_hosts=["testserver"],  # TestClient's Host
    )


@pytest.fixture
def app(settings: Settings) -> Iterator[FastAPI]:
    """A migrated app."""
    application = create_app(settings)
    yield application
    application.state.db.dispose()


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    """A client whose server errors come back as responses (they must be problems, not raises)."""
    with TestClient(app, raise_server_exceptions=False, headers=JSON) as test_client:
        yield test_client


Columns = tuple[Sequence[int], Sequence[float]]


def point_batch(batch_id: str, series: dict[str, Columns]) -> PointBatch:
    """A ``PointBatch`` from {name: (steps, values)}; wall times are the steps as floats."""
    return PointBatch(
        batch_id=batch_id,
        series=[
            SeriesColumns(
                name=name,
                steps=encode_i64(steps),
                values=encode_f64(values),
                times=encode_f64([float(s) for s in steps]),
            )
            for name, (steps, values) in series.items()
        ],
    )


@pytest.fixture
def post_batch(client: TestClient) -> Callable[..., dict[str, object]]:
    """POST a batch built by :func:`point_batch` and return the JSON answer (asserting 200)."""

    def post(run_id: str, batch_id: str, series: dict[str, Columns]) -> dict[str, object]:
        response = client.post(
            f"/api/v1/runs/{run_id}/points", content=dumps(point_batch(batch_id, series))
        )
        assert response.status_code == 200, response.text
        answer: dict[str, object] = response.json()
        return answer

    return post


@pytest.fixture
def make_run(client: TestClient) -> Callable[..., dict[str, object]]:
    """PUT a run and return its ``RunOut``."""

    def put(run_id: str, project: str = "proj", name: str = "run", **extra: object) -> dict:  # type: ignore[type-arg]
        response = client.put(
            f"/api/v1/runs/{run_id}", json={"project": project, "name": name, **extra}
        )
        assert response.status_code == 200, response.text
        out: dict[str, object] = response.json()
        return out

    return put
