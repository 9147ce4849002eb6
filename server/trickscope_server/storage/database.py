"""Engines, sessions and schema upgrades for SQLite (default) and PostgreSQL."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker

from trickscope_server.storage.points import SeriesIdCache

MIGRATIONS = "trickscope_server.storage:migrations"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the SSE readers and the REST reads run while an ingest commits; NORMAL is durable
    # across application crashes in WAL mode and much faster than FULL; SQLite leaves foreign keys
    # off unless asked, per connection.
    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.close()


def make_engine(url: str) -> Engine:
    """An engine for ``url`` with the per-dialect settings trickscope relies on."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(parsed, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(parsed, pool_pre_ping=True, pool_size=10, max_overflow=20)


def _upgrade(engine: Engine) -> None:
    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    with engine.connect() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        connection.commit()


def upgrade_database(url: str) -> None:
    """Bring the database at ``url`` to the newest schema; a no-op when it is already there."""
    engine = make_engine(url)
    try:
        _upgrade(engine)
    finally:
        engine.dispose()


class Database:
    """An engine and its session factory; services open one session per use case."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.series_ids = SeriesIdCache()  # for ingest: ids of the series of recent runs

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.engine.dialect.name

    def upgrade(self) -> None:
        """Run the migrations to head on this engine."""
        _upgrade(self.engine)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session inside one transaction: committed on success, rolled back on error."""
        with self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def reader(self) -> Iterator[Session]:
        """A session for reads (rolled back at the end: nothing to commit)."""
        with self._sessions() as session:
            yield session

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()
