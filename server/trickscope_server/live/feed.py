"""The per-run reader: one storage read per wake-up serves every live stream of the run."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import orjson
from fastapi.concurrency import run_in_threadpool

from trickscope_server.errors import RunNotFoundError
from trickscope_server.live.subscriber import Subscriber, sse_message
from trickscope_server.services import events, health, liveness
from trickscope_server.storage import Database

# Chunks per page: bounds one message's size when a stream resumes far behind.
CHUNKS_PER_MESSAGE = 500
# Messages a stream may have queued before it counts as lagging (re-read from its cursor).
OUTBOX_CAPACITY = 32
# Streams handed a message per turn of the event loop. Each stream then writes it to its socket
# (~20-40 us); handing all of them out at once would queue a request that arrives meanwhile
# (an ingest) behind hundreds of writes, in slices it waits for one slice at most.
STREAMS_PER_TURN = 16
# Ends a stream whose reader failed: the browser's EventSource reconnects after a second with
# its Last-Event-ID, so nothing is skipped.
RECONNECT = b"retry: 1000\n\n"
# After a diagnosis that found what a stream was last sent: its report is current as of now.
HEALTH_UNCHANGED = b"event: health-unchanged\ndata: {}\n\n"
# A run with streams is marked followed this far ahead, renewed well before it lapses: ingest
# answers then tell the agent to send at its fast cadence (services/liveness.py). After the last
# stream leaves, the agent slows down within FOLLOW_SECONDS.
FOLLOW_SECONDS = 30.0
FOLLOW_RENEW_SECONDS = 10.0

log = logging.getLogger(__name__)


class RunFeed:
    """Reads one run for all its subscribers in this process.

    Subscribers at the same cursor (every stream that has caught up) share one read and one
    encoded message per wake-up; a stream resuming from elsewhere gets its own read until it
    reaches the others. Health is diagnosed once per interval for all of them. Created and used
    on the event loop; ``wake`` may be called from any thread.
    """

    def __init__(
        self,
        db: Database,
        run_id: str,
        *,
        poll_seconds: float,
        health_seconds: float,
        grace_seconds: float | None,
        on_followed: Callable[[], None] | None = None,
    ) -> None:
        self.db = db
        self.run_id = run_id
        self.poll_seconds = poll_seconds
        self.health_seconds = health_seconds
        self.grace_seconds = grace_seconds
        self.subscribers: set[Subscriber] = set()
        self.reads = 0  # storage reads so far (for benches and tests)
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._health_due = True
        self._health_forced = False
        self._health_at = -float("inf")
        self._health: bytes | None = None
        self._task: asyncio.Task[None] | None = None
        self._nudge_every = float("inf")
        self._nudge_at = -float("inf")
        self._follow_renew_at = -float("inf")
        # Told once the run is first marked followed: a waiting agent then hears of it.
        self._on_followed = on_followed

    def join(self, after: int, idle_seconds: float = 1.0) -> Subscriber:
        """A new subscriber from cursor ``after``, nudged after ``idle_seconds`` without a
        message; starts the reader if it is not running."""
        subscriber = Subscriber(after, OUTBOX_CAPACITY, self.wake, idle_seconds)
        self.subscribers.add(subscriber)
        # Nudges are checked often enough for the most impatient stream.
        self._nudge_every = min(self._nudge_every, idle_seconds / 2)
        self._health_forced = True  # a new stream gets a diagnosis as soon as it caught up
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"live-feed-{self.run_id}")
        self.wake()
        return subscriber

    def leave(self, subscriber: Subscriber) -> bool:
        """Drop a subscriber; True (and the reader stopped) when it was the last one."""
        self.subscribers.discard(subscriber)
        if self.subscribers:
            return False
        if self._task is not None:
            self._task.cancel()
            self._task = None
        return True

    def wake(self) -> None:
        """Something changed: read again. Safe from any thread."""
        try:
            self._loop.call_soon_threadsafe(self._wake.set)
        except RuntimeError:
            pass  # the loop has closed: nobody is listening any more

    async def _run(self) -> None:
        try:
            await self._follow()
        except Exception:  # a failed read must not leave streams waiting forever
            log.exception("live reader of run %s failed; its streams are closed", self.run_id)
            for subscriber in self.subscribers:
                subscriber.finish(RECONNECT)
            self._task = None  # the next stream to join starts a fresh reader

    async def _follow(self) -> None:
        while self.subscribers:
            await self._mark_followed()
            # Cleared before reading, so a commit landing during the read still wakes us.
            self._wake.clear()
            more = await self._read_round()
            await self._push_health()
            if not more:  # else a page was full or a group is behind: read again before waiting
                await self._wait()

    async def _wait(self) -> None:
        """Until a wake-up, the next poll or a health diagnosis falls due, nudging idle streams
        meanwhile."""
        # The poll keeps workers sharing PostgreSQL live when a notification is lost.
        due = min(time.monotonic() + self.poll_seconds, self._follow_renew_at)
        if self._health_due:
            due = min(due, self._health_at + self.health_seconds)
        while True:
            self._nudge_idle()
            now = time.monotonic()
            if now >= due:
                return
            try:
                await asyncio.wait_for(self._wake.wait(), min(due, self._nudge_at) - now)
                return
            except asyncio.TimeoutError:
                pass

    async def _mark_followed(self) -> None:
        """Mark the run followed when the mark is due for renewal. A failure (the database
        busy past its timeout) costs the agent's fast cadence, never the streams."""
        now = time.monotonic()
        if now < self._follow_renew_at:
            return
        self._follow_renew_at = now + FOLLOW_RENEW_SECONDS
        try:
            await run_in_threadpool(
                liveness.mark_followed, self.db, run_id=self.run_id, seconds=FOLLOW_SECONDS
            )
        except Exception as exc:
            log.warning("could not mark run %s as followed live: %s", self.run_id, exc)
            return
        # After the mark is stored, not before: an agent's wait that starts between the two
        # then finds the mark when it reads it (see Broadcaster.follow_wait).
        on_followed, self._on_followed = self._on_followed, None
        if on_followed is not None:
            on_followed()

    def _nudge_idle(self) -> None:
        """Wake the streams that waited their ``idle_seconds`` (one pass per interval)."""
        now = time.monotonic()
        if now < self._nudge_at:
            return
        self._nudge_at = now + self._nudge_every
        for subscriber in self.subscribers:
            subscriber.nudge(now)

    async def _read_round(self) -> bool:
        """One read per distinct cursor; True when a read stopped short of the newest point."""
        groups: dict[int, list[Subscriber]] = defaultdict(list)
        for subscriber in self.subscribers:
            if not subscriber.lagging and not subscriber.finished:
                groups[subscriber.cursor].append(subscriber)
        more = False
        for cursor, members in groups.items():
            self.reads += 1
            page = await run_in_threadpool(
                events.read_event_page,
                self.db,
                run_id=self.run_id,
                after=cursor,
                limit=CHUNKS_PER_MESSAGE,
                grace_seconds=self.grace_seconds,
            )
            if page is None:
                deleted = sse_message("status", {"status": "deleted"})
                for subscriber in self.subscribers:
                    subscriber.finish(deleted)
                return False
            more = more or not page.complete
            if page.series:
                self._health_due = True
                # Encoded once for the whole group: every stream sends the same bytes.
                message = sse_message(
                    "points", {"series": page.series, "status": page.status}, page.cursor
                )
                await self._hand_out(members, cursor, message, page)
            elif page.complete:
                self._caught_up(members, page.status, cursor)
        return more

    async def _hand_out(
        self, members: list[Subscriber], cursor: int, message: bytes, page: events.EventPage
    ) -> None:
        """Offer a page to the group at ``cursor``, a slice per turn of the event loop."""
        for start in range(0, len(members), STREAMS_PER_TURN):
            if start:
                await asyncio.sleep(0)  # let a waiting request (an ingest) run between slices
            accepted = []
            for subscriber in members[start : start + STREAMS_PER_TURN]:
                subscriber.caught_up = False
                if subscriber.cursor == cursor and subscriber.offer(message):
                    subscriber.cursor = page.cursor
                    accepted.append(subscriber)
            if page.complete:  # the page reached the newest point: no empty read to find out
                self._caught_up(accepted, page.status, page.cursor)

    def _caught_up(self, members: list[Subscriber], status: str, cursor: int) -> None:
        """These streams have every point up to the newest: tell them a status change."""
        message: bytes | None = None
        for subscriber in members:
            subscriber.caught_up = True
            if status != subscriber.sent_status:
                message = message or sse_message("status", {"status": status}, cursor)
                if subscriber.offer(message):
                    subscriber.sent_status = status
                    # A final status re-diagnoses at once: some checks judge finished runs.
                    self._health_forced = True

    async def _push_health(self) -> None:
        """Diagnose when due (at most every interval, or at once when forced) and tell each
        caught-up subscriber whose last report differs; one whose report still holds hears so
        in a word (``health-unchanged``), which keeps its page from reading ``/health`` itself."""
        now = time.monotonic()
        forced = self._health_forced
        diagnosed = False
        if forced or (self._health_due and now - self._health_at >= self.health_seconds):
            self._health_due, self._health_forced, self._health_at = False, False, now
            try:
                report: Any = await run_in_threadpool(
                    health.health_report, self.db, run_id=self.run_id
                )
            except RunNotFoundError:
                return  # deleted meanwhile: the next read says so
            self._health = orjson.dumps(report)
            diagnosed = True
        if self._health is None:
            return
        message: bytes | None = None
        for subscriber in self.subscribers:
            if not subscriber.caught_up:
                continue
            if subscriber.sent_health != self._health:
                message = message or b"event: health\ndata: " + self._health + b"\n\n"
                if subscriber.offer(message):
                    subscriber.sent_health = self._health
            elif diagnosed:
                subscriber.offer(HEALTH_UNCHANGED)
