"""Engines, sessions and schema upgrades for SQLite (default) and PostgreSQL."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, exc, make_url
from sqlalchemy.orm import Session, sessionmaker

from trickscope_server.storage.ingest_state import RunStateCache
from trickscope_server.storage.points import SeriesIdCache
from trickscope_server.storage.transaction import WriteTransaction

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
    # LIFO: the connection just checked in serves the next request, so a busy server keeps a
    # few hot connections and only the idle ones need the ping below.
    engine = create_engine(parsed, pool_size=10, max_overflow=20, pool_use_lifo=True)
    _ping_when_idle(engine)
    return engine


# A pooled connection unused for longer than this is pinged before use (a database restarted
# meanwhile then costs a reconnect, not a failed request); one in steady use is not.
PING_IDLE_SECONDS = 2.0


def _ping_when_idle(engine: Engine) -> None:
    """``pool_pre_ping``, for connections that have been idle only: the agent posts every 0.5 s,
    and a ping per request was a round trip of its own on every ingest."""

    @event.listens_for(engine, "connect")
    def connected(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkin")
    def checked_in(_dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if time.monotonic() - record.info.get("idle_since", 0.0) <= PING_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
            dbapi_connection.rollback()  # the ping's transaction
        except Exception as error:
            # The pool discards this connection and checks out another (a fresh one if need be).
            raise exc.DisconnectionError(f"pooled connection failed its ping: {error}") from error


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
        self.run_states = RunStateCache()  # for ingest: what it knows of recent runs

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
    def write(self) -> Iterator[WriteTransaction]:
        """An ingest's write transaction (see ``storage/transaction.py``): committed on success,
        rolled back on error."""
        with self.engine.begin() as connection:
            transaction = WriteTransaction(connection)
            try:
                yield transaction
            finally:
                transaction.close()

    @contextmanager
    def reader(self) -> Iterator[Session]:
        """A session for reads (rolled back at the end: nothing to commit)."""
        with self._sessions() as session:
            yield session

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()
