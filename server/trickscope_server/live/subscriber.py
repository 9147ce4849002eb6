"""One live stream's side of a run feed: its cursor, what it was last told, a bounded queue."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

import orjson


def sse_message(event: str, data: object, event_id: int | None = None) -> bytes:
    """One Server-Sent Events message; ``event_id`` becomes the client's Last-Event-ID."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: ".encode() + orjson.dumps(data) + b"\n\n"


def _release(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Subscriber:
    """A stream's cursor and outbox, fed by its run's reader on the event loop.

    The outbox holds at most ``capacity`` messages. When it is full the subscriber is *lagging*:
    the reader stops handing it pages, its cursor stays at the last page it accepted, and once
    the stream has drained half of the outbox the reader reads again from that cursor. A slow
    client therefore never blocks the others and never loses a point.

    A message costs the stream one wake-up of its task and nothing else: every stream of a run
    takes a message per ingested batch, so it waits on a bare future, without a timer of its own
    (``asyncio.wait_for`` would start a task per wait). A stream that waits ``idle_seconds`` is
    woken empty-handed by its feed's :meth:`nudge`, so it can send a keepalive or notice that
    its client left.
    """

    def __init__(
        self,
        cursor: int,
        capacity: int,
        on_drained: Callable[[], None],
        idle_seconds: float = 1.0,
    ) -> None:
        self.cursor = cursor
        self.capacity = capacity
        self.idle_seconds = idle_seconds
        self.sent_status = "running"  # a running run needs no status message; others do
        self.sent_health: bytes | None = None
        self.caught_up = False  # the last read from this cursor found nothing newer
        self.lagging = False
        self._outbox: deque[bytes] = deque()
        self._final: bytes | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._waiting_since = 0.0
        self._on_drained = on_drained

    @property
    def finished(self) -> bool:
        """The stream has a last message pending (the run was deleted)."""
        return self._final is not None

    def offer(self, message: bytes) -> bool:
        """Queue a message; False (and lagging) when the outbox is full."""
        if len(self._outbox) >= self.capacity:
            self.lagging = True
            return False
        self._outbox.append(message)
        if self._waiter is not None:
            _release(self._waiter)
        return True

    def finish(self, message: bytes) -> None:
        """End the stream with ``message`` once what is queued has been sent."""
        self._final = message
        if self._waiter is not None:
            _release(self._waiter)

    def nudge(self, now: float) -> None:
        """Wake the stream empty-handed if it has waited ``idle_seconds`` by ``now``
        (``time.monotonic()``)."""
        waiter = self._waiter
        if waiter is not None and now - self._waiting_since >= self.idle_seconds:
            _release(waiter)

    async def next(self, timeout: float | None = None) -> bytes | None:
        """The next message; None when woken without one: after ``timeout`` seconds if given,
        else by a :meth:`nudge`.

        After the final message, every call returns ``b""`` (the stream should end).
        """
        waited = False
        while True:
            if self._outbox:
                message = self._outbox.popleft()
                if self.lagging and len(self._outbox) <= self.capacity // 2:
                    self.lagging = False
                    self._on_drained()
                return message
            if self._final is not None:
                final, self._final = self._final, b""
                return final
            if waited:
                return None  # timed out or nudged
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            self._waiting_since = time.monotonic()
            timer = None if timeout is None else loop.call_later(timeout, _release, waiter)
            try:
                await waiter
            finally:
                if timer is not None:
                    timer.cancel()
                self._waiter = None
            waited = True
