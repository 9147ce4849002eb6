"""Migrations: the chain builds the models' schema, and running it again changes nothing."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from trickscope_server.storage import upgrade_database
from trickscope_server.storage.database import make_engine
from trickscope_server.storage.models import Base

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
        assert version == "0006"
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
