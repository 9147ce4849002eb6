"""Live updates: ingest wakes one reader per run, which feeds every SSE stream of that run.

A wake-up is only a hint that something changed: readers always read storage from their
subscribers' cursors, so a lost or coalesced notification costs at most one poll interval.
Across worker processes the hint travels by PostgreSQL ``NOTIFY`` (see ``notify.py``), and the
poll remains the fallback.

The other way round, a training process may wait for its run to be followed
(``GET /runs/{id}/followed?wait=``): a run's first stream in a process marks the run followed in
the database, then wakes the waits here and, by ``NOTIFY``, in the other workers. A glance (the
runs list showing a running run) ends the waits too, asking for what the agent holds once,
without following the run.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from trickscope_server.live.feed import CHUNKS_PER_MESSAGE, RunFeed
from trickscope_server.live.subscriber import Subscriber, sse_message
from trickscope_server.storage import Database

__all__ = [
    "CHUNKS_PER_MESSAGE",
    "Broadcaster",
    "RunFeed",
    "Subscriber",
    "WaitEnd",
    "sse_message",
]


class WaitEnd(enum.Enum):
    """Why a wait for a follower ended before its time."""

    FOLLOWED = "followed"  # a stream started following the run: the agent goes fast
    GLANCED = "glanced"  # a reader glanced at the run: the agent sends what it holds, once


class _FollowWait:
    """One held wait: its event, and why it was set."""

    __slots__ = ("end", "event")

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.end: WaitEnd | None = None


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
        # Called with the run id when a stream here starts following it, or a reader here
        # glances at it: tells the others.
        self.forward_followed: Callable[[str], None] | None = None
        self.forward_glanced: Callable[[str], None] | None = None
        self._follow_waits: dict[str, set[_FollowWait]] = {}

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
                on_followed=lambda: self.followed(run_id),
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
        self._call_on_loop(self._wake_on_loop, run_id)

    def _wake_on_loop(self, run_id: str) -> None:
        feed = self._feeds.get(run_id)
        if feed is not None:
            feed.wake()

    def publish(self, run_id: str) -> None:
        """Tell the run's readers, here and in other workers, that it changed (after commit)."""
        self.wake(run_id)
        if self.forward is not None:
            self.forward(run_id)

    @asynccontextmanager
    async def follow_wait(
        self, run_id: str
    ) -> AsyncIterator[Callable[[float], Awaitable[WaitEnd | None]]]:
        """Wait for the run to be followed: the block gets ``wait(seconds)``, which returns
        :attr:`WaitEnd.FOLLOWED` once a stream here or in another worker starts following the
        run, :attr:`WaitEnd.GLANCED` once a reader glances at it, None after ``seconds``.

        The wait is registered on entry: read the run's ``followed_until`` inside the block,
        after which no start of a stream can be missed (a stream's reader stores the mark
        before it wakes the waits).
        """
        self._loop = asyncio.get_running_loop()
        held = _FollowWait()
        self._follow_waits.setdefault(run_id, set()).add(held)

        async def wait(seconds: float) -> WaitEnd | None:
            try:
                await asyncio.wait_for(held.event.wait(), seconds)
            except asyncio.TimeoutError:
                return None
            return held.end

        try:
            yield wait
        finally:
            waits = self._follow_waits.get(run_id)
            if waits is not None:
                waits.discard(held)
                if not waits:
                    del self._follow_waits[run_id]

    def followed(self, run_id: str) -> None:
        """A stream here started following the run: wake the waits here and in other workers."""
        self.wake_follow_waits(run_id)
        if self.forward_followed is not None:
            self.forward_followed(run_id)

    def glanced(self, run_id: str) -> None:
        """A reader here glanced at the run (the runs list): end the waits for it here and in
        other workers, each agent then sending what it holds, without following the run."""
        self.wake_follow_waits(run_id, WaitEnd.GLANCED)
        if self.forward_glanced is not None:
            self.forward_glanced(run_id)

    def wake_follow_waits(self, run_id: str, end: WaitEnd = WaitEnd.FOLLOWED) -> None:
        """End this process's waits for the run, saying why. Safe from any thread."""
        self._call_on_loop(self._end_follow_waits, run_id, end)

    def _end_follow_waits(self, run_id: str, end: WaitEnd) -> None:
        # Popped: a wait ends once. A glance that beats a follower's wake-up is answered as a
        # glance; the agent's next wait then reads the follower's mark and is answered at once.
        for held in self._follow_waits.pop(run_id, ()):
            held.end = end
            held.event.set()

    def _call_on_loop(self, callback: Callable[..., None], *args: object) -> None:
        """``callback(*args)`` on this process's event loop, if it has one that still runs."""
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:
            pass  # the loop has closed

    def feed(self, run_id: str) -> RunFeed | None:
        """The run's reader in this process, if any (for tests and diagnostics)."""
        return self._feeds.get(run_id)

    def listener_count(self, run_id: str) -> int:
        """How many streams follow the run in this process."""
        feed = self._feeds.get(run_id)
        return len(feed.subscribers) if feed is not None else 0
