"""Cross-process wake-ups on PostgreSQL: ingest in one worker wakes the readers in the others.

Each process NOTIFYs ``trickscope_live`` with ``<pid>:<run id>`` after a commit (from a sender
thread, so ingest never waits on it) and LISTENs on a connection of its own. A notification lost
to a reconnect costs one poll interval: readers poll anyway.
"""

from __future__ import annotations

import logging
import os
import threading
import time

import psycopg
from sqlalchemy.engine import make_url

from trickscope_server.live import Broadcaster

CHANNEL = "trickscope_live"
_RETRY_SECONDS = 1.0

log = logging.getLogger(__name__)


def libpq_url(database_url: str) -> str:
    """The SQLAlchemy URL as a libpq connection string (driver suffix dropped)."""
    url = make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


class PgRelay:
    """Forwards this process's publishes to the others and wakes local readers on theirs."""

    def __init__(self, database_url: str, broadcaster: Broadcaster) -> None:
        self._conninfo = libpq_url(database_url)
        self._broadcaster = broadcaster
        self._tag = f"{os.getpid()}:"
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._has_work = threading.Event()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._send_loop, name="live-notify", daemon=True),
            threading.Thread(target=self._listen_loop, name="live-listen", daemon=True),
        ]

    def start(self) -> None:
        """Start the sender and listener threads and route the broadcaster's publishes here."""
        self._broadcaster.forward = self.forward
        for thread in self._threads:
            thread.start()

    def close(self) -> None:
        """Stop both threads: the sender's last NOTIFY ends the listener's wait."""
        self._broadcaster.forward = None
        self._stop.set()
        self._has_work.set()
        for thread in self._threads:
            thread.join(timeout=3)

    def forward(self, run_id: str) -> None:
        """Queue a NOTIFY for the run; many publishes before the send coalesce into one."""
        with self._lock:
            self._pending.add(run_id)
        self._has_work.set()

    def _send_loop(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True) as conn:
                    while not self._stop.is_set():
                        self._has_work.wait()
                        self._has_work.clear()
                        with self._lock:
                            runs, self._pending = self._pending, set()
                        for run_id in runs:
                            conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, self._tag + run_id))
                    # Wakes this process's listener out of its wait, so closing takes no second.
                    conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, self._tag))
            except psycopg.Error as exc:
                log.warning("live notifications: sending failed (%s); retrying", exc)
                time.sleep(_RETRY_SECONDS)

    def _listen_loop(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=1.0):
                            if self._stop.is_set():
                                break
                            _, _, run_id = note.payload.partition(":")
                            if run_id and not note.payload.startswith(self._tag):
                                self._broadcaster.wake(run_id)
            except psycopg.Error as exc:
                log.warning("live notifications: listening failed (%s); retrying", exc)
                time.sleep(_RETRY_SECONDS)
