"""An ingest's write transaction: the statements of every batch straight to the driver.

A batch of a few logged scalars runs the same handful of statements every time (take the run's
sequence number, record the batch id, insert chunks, merge summaries), already written in the
driver's parameter style with values in the driver's types. Through a SQLAlchemy ``Session``,
each of them also pays for an execution context, result metadata and the session's own
connection bookkeeping: measured here, more CPU than SQLite's or PostgreSQL's own work for
such a batch (``bench/ingest_requests.py``). :class:`WriteTransaction` sends them to the
driver's cursor, and keeps a ``Session`` joined to the same transaction, made on first use, for
the statements built with SQLAlchemy (a new series, a recount, a block family's first read).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.orm import Session


class WriteTransaction:
    """One write transaction on one pooled connection (see the module's docstring).

    Committed or rolled back by its owner (:meth:`Database.write`); statements run through
    :meth:`execute`, :meth:`executemany` and :attr:`session` are all part of it.
    """

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self.dialect: str = connection.dialect.name
        driver = connection.connection.driver_connection
        if driver is None:  # a connection the pool has already closed: never handed out open
            raise RuntimeError("the pooled connection has no driver connection")
        self._cursor = driver.cursor()
        self._session: Session | None = None

    def execute(self, sql: str, params: Any = ()) -> Any:
        """Run one statement in the driver's own parameter style; returns the driver's cursor,
        whose rows are this statement's until the next call."""
        self._cursor.execute(sql, params)
        return self._cursor

    def executemany(self, sql: str, rows: Sequence[Any]) -> None:
        """Run one statement once per parameter set of ``rows``."""
        self._cursor.executemany(sql, rows)

    @property
    def session(self) -> Session:
        """A ``Session`` on this transaction's connection, for SQLAlchemy-built statements.

        It never commits or rolls back the transaction itself: its owner does.
        """
        if self._session is None:
            # Joined to the connection's transaction: the session never commits it.
            self._session = Session(bind=self._connection, expire_on_commit=False)
        return self._session

    def close(self) -> None:
        """Release the cursor and the session (the transaction is its owner's to end)."""
        if self._session is not None:
            self._session.close()
            self._session = None
        self._cursor.close()
