"""Live updates: ingest wakes one reader per run, which feeds every SSE stream of that run.

A wake-up is only a hint that something changed: readers always read storage from their
subscribers' cursors, so a lost or coalesced notification costs at most one poll interval.
Across worker processes the hint travels by PostgreSQL ``NOTIFY`` (see ``notify.py``), and the
poll remains the fallback.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from trickscope_server.live.feed import CHUNKS_PER_MESSAGE, RunFeed
from trickscope_server.live.subscriber import Subscriber, sse_message
from trickscope_server.storage import Database

__all__ = ["CHUNKS_PER_MESSAGE", "Broadcaster", "RunFeed", "Subscriber", "sse_message"]


class Broadcaster:
    """This process's run feeds: at most one reader per run, whatever the number of streams."""

    def __init__(
        self,
        db: Database,
        *,
        poll_seconds: float = 1.0,
        health_seconds: float = 3.0,
        grace_seconds: float | None = None,
    ) -> None:
        self.db = db
        self.poll_seconds = poll_seconds
        self.health_seconds = health_seconds
        self.grace_seconds = grace_seconds
        self._feeds: dict[str, RunFeed] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        # Called with the run id after a local publish: tells the other workers (NOTIFY).
        self.forward: Callable[[str], None] | None = None

    @asynccontextmanager
    async def subscribe(
        self, run_id: str, after: int, idle_seconds: float = 1.0
    ) -> AsyncIterator[Subscriber]:
        """Follow a run from cursor ``after`` for the duration of the ``async with`` block; the
        subscriber's ``next()`` returns None after ``idle_seconds`` without a message."""
        self._loop = asyncio.get_running_loop()
        feed = self._feeds.get(run_id)
        if feed is None:
            feed = RunFeed(
                self.db,
                run_id,
                poll_seconds=self.poll_seconds,
                health_seconds=self.health_seconds,
                grace_seconds=self.grace_seconds,
            )
            self._feeds[run_id] = feed
        subscriber = feed.join(after, idle_seconds)
        try:
            yield subscriber
        finally:
            if feed.leave(subscriber) and self._feeds.get(run_id) is feed:
                del self._feeds[run_id]

    def wake(self, run_id: str) -> None:
        """Wake the run's reader in this process, if it has one. Safe from any thread."""
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._wake_on_loop, run_id)
        except RuntimeError:
            pass  # the loop has closed

    def _wake_on_loop(self, run_id: str) -> None:
        feed = self._feeds.get(run_id)
        if feed is not None:
            feed.wake()

    def publish(self, run_id: str) -> None:
        """Tell the run's readers, here and in other workers, that it changed (after commit)."""
        self.wake(run_id)
        if self.forward is not None:
            self.forward(run_id)

    def feed(self, run_id: str) -> RunFeed | None:
        """The run's reader in this process, if any (for tests and diagnostics)."""
        return self._feeds.get(run_id)

    def listener_count(self, run_id: str) -> int:
        """How many streams follow the run in this process."""
        feed = self._feeds.get(run_id)
        return len(feed.subscribers) if feed is not None else 0
