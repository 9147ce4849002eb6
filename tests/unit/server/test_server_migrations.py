"""Migrations: the chain builds the models' schema, and running it again changes nothing."""

from __future__ import annotations

import numpy as np
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from fastapi.testclient import TestClient
from sqlalchemy import inspect, text

from trickscope_server.app import create_app
from trickscope_server.config import Settings
from trickscope_server.storage import upgrade_database
from trickscope_server.storage.database import MIGRATIONS, make_engine
from trickscope_server.storage.models import Base
from trickscope_wire import (
    BLOCKS_WIRE_VERSION,
    HISTOGRAM_BLOCKS_WIRE_VERSION,
    HistogramBlock,
    PointBatch,
    StatBlock,
    dumps,
    encode_f64,
    encode_i64,
)

pytestmark = pytest.mark.timeout(60)


def test_upgrading_twice_is_a_no_op_and_matches_the_models(db_url: str) -> None:
    upgrade_database(db_url)
    engine = make_engine(db_url)
    try:
        with engine.connect() as connection:
            before = {t: inspect(connection).get_columns(t) for t in Base.metadata.tables}
            version = MigrationContext.configure(connection).get_current_revision()
        upgrade_database(db_url)
        with engine.connect() as connection:
            after = {t: inspect(connection).get_columns(t) for t in Base.metadata.tables}
            assert MigrationContext.configure(connection).get_current_revision() == version
            diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert version == "0008"
        assert repr(before) == repr(after)
        assert diff == []
    finally:
        engine.dispose()


def test_sqlite_connections_use_wal_and_foreign_keys(tmp_path: object) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/x.db")
    try:
        with engine.connect() as connection:
            driver = connection.connection.dbapi_connection
            assert driver is not None
            assert driver.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert driver.execute("PRAGMA foreign_keys").fetchone()[0] == 1
            assert driver.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    finally:
        engine.dispose()


def _at_revision(url: str, revision: str) -> None:
    """Migrate the database at ``url`` up to ``revision`` only."""
    engine = make_engine(url)
    try:
        config = Config()
        config.set_main_option("script_location", MIGRATIONS)
        with engine.connect() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
            connection.commit()
    finally:
        engine.dispose()


# Run "old", declared layer "w", as an older revision's schema holds it.
_OLD_RUN = text(
    "INSERT INTO runs (id, project, name, status, config, tags, system, layers, ranks, setup, "
    "agent_findings, created_at, updated_at, last_seq) VALUES ('old', 'p', 'old', 'finished', "
    "'{}', '[]', '{}', '[\"w\"]', '{}', '{}', '{}', 1.0, 1.0, 1)"
)


def test_per_series_chunks_of_a_0005_database_read_the_same_after_the_upgrade_beside_blocks(
    db_url: str, settings: Settings
) -> None:
    _at_revision(db_url, "0005")
    engine = make_engine(db_url)
    steps, values = [0, 1, 2], [1.5, float("nan"), -2.0]
    try:
        with engine.begin() as connection:
            connection.execute(_OLD_RUN)
            connection.execute(
                text(
                    "INSERT INTO series (run_id, name, count, first_step, last_step, last_value, "
                    "min_value, max_value, first_nonfinite_step, pending_chunks) VALUES "
                    "('old', 'grad_norm/w', 3, 0, 2, -2.0, -2.0, 1.5, 1, 1)"
                )
            )
            series_id = connection.execute(text("SELECT id FROM series")).scalar_one()
            connection.execute(
                text(
                    "INSERT INTO chunks (run_id, series_id, step_min, step_max, count, vmin, "
                    'vmax, steps, "values", times, seq, seq_lo) VALUES '
                    "('old', :sid, 0, 2, 3, -2.0, 1.5, :steps, :values, :times, 1, 1)"
                ),
                {
                    "sid": series_id,
                    "steps": np.array(steps, "<i8").tobytes(),
                    "values": np.array(values, "<f8").tobytes(),
                    "times": np.array([9.0, 9.0, 9.0], "<f8").tobytes(),
                },
            )
    finally:
        engine.dispose()
    app = create_app(settings)  # upgrades to head
    try:
        with TestClient(app, headers={"Content-Type": "application/json"}) as client:
            body = client.get("/api/v1/runs/old/points", params={"name": "grad_norm/w"}).json()
            assert (body["step"], body["value"]) == (steps, [1.5, "NaN", -2.0])
            block = StatBlock(
                "grad_norm", ["w"], encode_i64([3]), encode_f64([9.5]), [encode_f64([4.0])]
            )
            batch = PointBatch("b", [], wire_version=BLOCKS_WIRE_VERSION, blocks=[block])
            assert client.post("/api/v1/runs/old/points", content=dumps(batch)).status_code == 200
            body = client.get("/api/v1/runs/old/points", params={"name": "grad_norm/w"}).json()
            assert (body["step"], body["value"]) == ([0, 1, 2, 3], [1.5, "NaN", -2.0, 4.0])
            (summary,) = client.get("/api/v1/runs/old/series").json()["series"]
            assert summary == {
                "name": "grad_norm/w",
                "count": 4,
                "first_step": 0,
                "last_step": 3,
                "last_value": 4.0,
                "min_value": -2.0,
                "max_value": 4.0,
                "first_nonfinite_step": 1,
            }
            heat = client.get("/api/v1/runs/old/heatmap", params={"stat": "grad_norm"}).json()
            assert heat["z"] == [[1.5, "NaN", -2.0, 4.0]]
    finally:
        app.state.db.dispose()


def test_histogram_rows_of_a_0006_database_read_the_same_after_the_upgrade_beside_blocks(
    db_url: str, settings: Settings
) -> None:
    _at_revision(db_url, "0006")
    engine = make_engine(db_url)
    try:
        with engine.begin() as connection:
            connection.execute(_OLD_RUN)
            for step in (0, 100):
                connection.execute(
                    text(
                        "INSERT INTO histograms (run_id, name, step, bins, lo, hi, counts, "
                        "nonfinite, wall_time) VALUES ('old', 'grad_hist/w', :step, 2, -1.0, "
                        "1.0, :counts, 0.0, 9.0)"
                    ),
                    {"step": step, "counts": np.array([step, 1.0], "<f8").tobytes()},
                )
    finally:
        engine.dispose()
    app = create_app(settings)  # upgrades to head
    try:
        with TestClient(app, headers={"Content-Type": "application/json"}) as client:
            url = "/api/v1/runs/old/histograms"
            body = client.get(url, params={"name": "grad_hist/w"}).json()
            assert (body["step"], body["counts"]) == ([0, 100], [[0.0, 1.0], [100.0, 1.0]])
            block = HistogramBlock(
                family="grad_hist",
                layers=["w"],
                bins=2,
                steps=encode_i64([100, 200]),
                times=encode_f64([9.5, 9.6]),
                lo=encode_f64([-2.0, -2.0]),
                hi=encode_f64([2.0, 2.0]),
                nonfinite=encode_f64([0.0, 0.0]),
                counts=encode_f64([7.0, 8.0, 9.0, 10.0]),
            )
            batch = PointBatch(
                "b", [], wire_version=HISTOGRAM_BLOCKS_WIRE_VERSION, histogram_blocks=[block]
            )
            assert client.post("/api/v1/runs/old/points", content=dumps(batch)).status_code == 200
            body = client.get(url, params={"name": "grad_hist/w"}).json()
            assert body["step"] == [0, 100, 200]
            assert body["counts"] == [[0.0, 1.0], [7.0, 8.0], [9.0, 10.0]]
            assert body["lo"] == [-1.0, -2.0, -2.0]
            names = client.get("/api/v1/runs/old/histograms/names").json()
            assert names == {"names": ["grad_hist/w"]}
    finally:
        app.state.db.dispose()
