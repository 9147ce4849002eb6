"""Cross-process wake-ups on PostgreSQL: ingest in one worker wakes the readers in the others.

Each process NOTIFYs ``trickscope_live`` with ``<pid>:<run id>`` after a commit (from a sender
thread, so ingest never waits on it) and LISTENs on a connection of its own. A notification lost
to a reconnect costs one poll interval: readers poll anyway. ``<pid>:+<run id>`` says a stream
started following the run (``+`` is not a run id's character): it ends the agents' waits for
that (``GET /runs/{id}/followed``), which otherwise find the database's mark when they next ask.
``<pid>:?<run id>`` says a reader glanced at the run: it ends them asking for what is held.

A process alone on its database sends none: each one's NOTIFY woke its own listener (which
ignores it) and cost a round trip on the sender's connection, at every batch of a single-process
server, the default. A listening connection holds a shared advisory lock, so the holders are the
listening processes; a new one says so with a NOTIFY the others hear at once, and the sender
counts the holders when it has heard nothing from another process for ``PEER_CHECK_SECONDS``.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
import zlib

import psycopg
from sqlalchemy.engine import make_url

from trickscope_server.live import Broadcaster, WaitEnd

CHANNEL = "trickscope_live"
FOLLOWED = "+"  # before a run id in a notification: a stream started following the run
GLANCED = "?"  # before a run id in a notification: a reader glanced at the run
# How long a word from another process (a notification, or its lock) counts as its presence.
PEER_CHECK_SECONDS = 2.0
_RETRY_SECONDS = 1.0
_LISTEN_SECONDS = 1.0  # how soon the listener notices it was told to stop
_COUNT_LISTENERS = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND classid = %s AND objid = %s AND objsubid = 2 AND pid <> %s"
)

log = logging.getLogger(__name__)


def libpq_url(database_url: str) -> str:
    """The SQLAlchemy URL as a libpq connection string (driver suffix dropped)."""
    url = make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def _listener_lock(channel: str) -> tuple[int, int]:
    """The advisory lock (two non-negative int4 keys) the listeners of ``channel`` hold."""
    return 0x7472_6963, zlib.crc32(channel.encode()) & 0x7FFF_FFFF  # "tric", the channel


class PgRelay:
    """Forwards this process's publishes to the others and wakes local readers on theirs."""

    def __init__(
        self,
        database_url: str,
        broadcaster: Broadcaster,
        *,
        channel: str = CHANNEL,
        name: str | None = None,
    ) -> None:
        """``channel``: the notification channel (an identifier) the processes of one service
        share; ``name``: this process's name in the notifications (default: its pid)."""
        self._conninfo = libpq_url(database_url)
        self._broadcaster = broadcaster
        self._channel = channel
        self._lock_key = _listener_lock(channel)
        self._tag = f"{os.getpid() if name is None else name}:"
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._has_work = threading.Event()
        self._stop = threading.Event()
        self._peer_seen = -float("inf")  # monotonic time of the last sign of another process
        self._alone_at = -float("inf")  # when the sender last found no other listener
        self._listener_pid = 0  # the backend of this process's listening connection, once up
        self._threads = [
            threading.Thread(target=self._send_loop, name="live-notify", daemon=True),
            threading.Thread(target=self._listen_loop, name="live-listen", daemon=True),
        ]

    def start(self) -> None:
        """Start the sender and listener threads and route the broadcaster's publishes here."""
        self._broadcaster.forward = self.forward
        self._broadcaster.forward_followed = self.forward_followed
        self._broadcaster.forward_glanced = self.forward_glanced
        for thread in self._threads:
            thread.start()

    def close(self) -> None:
        """Stop both threads: the sender's last NOTIFY ends the listener's wait."""
        self._broadcaster.forward = None
        self._broadcaster.forward_followed = None
        self._broadcaster.forward_glanced = None
        self._stop.set()
        self._has_work.set()
        for thread in self._threads:
            thread.join(timeout=3)

    def forward(self, run_id: str) -> None:
        """Queue a NOTIFY for the run (or another word after the process tag); many publishes
        before the send coalesce into one. Alone (lately checked, nothing heard from another
        process since), nothing: not even the sender thread is woken."""
        now = time.monotonic()
        if now - self._alone_at <= PEER_CHECK_SECONDS and self._peer_seen < self._alone_at:
            return
        with self._lock:
            self._pending.add(run_id)
        self._has_work.set()

    def forward_followed(self, run_id: str) -> None:
        """Queue a NOTIFY that a stream here started following the run (as :meth:`forward`)."""
        self.forward(FOLLOWED + run_id)

    def forward_glanced(self, run_id: str) -> None:
        """Queue a NOTIFY that a reader here glanced at the run (as :meth:`forward`)."""
        self.forward(GLANCED + run_id)

    def _send_loop(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True) as conn:
                    while not self._stop.is_set():
                        self._has_work.wait()
                        self._has_work.clear()
                        with self._lock:
                            runs, self._pending = self._pending, set()
                        if runs and not self._stop.is_set() and self._others_listen(conn):
                            for run_id in runs:
                                payload = self._tag + run_id
                                conn.execute("SELECT pg_notify(%s, %s)", (self._channel, payload))
                    # Wakes this process's listener out of its wait, so closing takes no second.
                    conn.execute("SELECT pg_notify(%s, %s)", (self._channel, self._tag))
            except psycopg.Error as exc:
                log.warning("live notifications: sending failed (%s); retrying", exc)
                time.sleep(_RETRY_SECONDS)

    def _others_listen(self, conn: psycopg.Connection) -> bool:
        """Whether another process listens: heard from lately, else its lock counted."""
        now = time.monotonic()
        if now - self._peer_seen <= PEER_CHECK_SECONDS:
            return True
        key = (*self._lock_key, self._listener_pid)
        (others,) = conn.execute(_COUNT_LISTENERS, key).fetchone() or (0,)
        if others:
            self._peer_seen = now
            return True
        self._alone_at = now
        return False

    def _listen_loop(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True) as conn:
                    conn.execute(f"LISTEN {self._channel}")
                    conn.execute("SELECT pg_advisory_lock_shared(%s, %s)", self._lock_key)
                    self._listener_pid = conn.info.backend_pid
                    # Here now: the others' senders count this process from this word on.
                    conn.execute("SELECT pg_notify(%s, %s)", (self._channel, self._tag))
                    while not self._stop.is_set():
                        # Waits on the socket itself: psycopg's ``notifies(timeout=)`` wakes
                        # ten times a second, ~1 ms of an idle server's CPU per second.
                        select.select([conn.fileno()], [], [], _LISTEN_SECONDS)
                        for note in conn.notifies(timeout=0):
                            if self._stop.is_set():
                                break
                            if note.payload.startswith(self._tag):
                                continue
                            self._peer_seen = time.monotonic()
                            _, _, run_id = note.payload.partition(":")
                            if run_id.startswith(FOLLOWED):
                                self._broadcaster.wake_follow_waits(run_id[len(FOLLOWED) :])
                            elif run_id.startswith(GLANCED):
                                glanced = run_id[len(GLANCED) :]
                                self._broadcaster.wake_follow_waits(glanced, WaitEnd.GLANCED)
                            elif run_id:
                                self._broadcaster.wake(run_id)
            except psycopg.Error as exc:
                log.warning("live notifications: listening failed (%s); retrying", exc)
                time.sleep(_RETRY_SECONDS)
