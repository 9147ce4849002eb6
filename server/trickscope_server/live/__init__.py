"""In-process notifications: ingest (on a worker thread) wakes the SSE loops (on the event loop).

Only a hint that something changed: subscribers always re-read storage from their cursor, so a
lost or coalesced notification costs at most one poll interval, and workers that share PostgreSQL
stay live through that poll.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Subscription:
    """One listener on one run; create it on the event loop that will wait on it."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()

    def notify(self) -> None:
        """Wake the waiter; safe to call from any thread."""
        try:
            self._loop.call_soon_threadsafe(self._event.set)
        except RuntimeError:
            pass  # the loop has closed: its listener is gone

    def clear(self) -> None:
        """Forget past notifications; call before reading storage so none is missed."""
        self._event.clear()

    async def wait(self, timeout: float) -> bool:
        """Wait for a notification; False when ``timeout`` seconds passed without one."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True


class Broadcaster:
    """Per-run fan-out of "new data" notifications."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: dict[str, set[Subscription]] = {}

    @contextmanager
    def subscribe(self, run_id: str) -> Iterator[Subscription]:
        """Listen to a run for the duration of the ``with`` block."""
        subscription = Subscription(run_id)
        with self._lock:
            self._subscribers.setdefault(run_id, set()).add(subscription)
        try:
            yield subscription
        finally:
            with self._lock:
                listeners = self._subscribers.get(run_id)
                if listeners is not None:
                    listeners.discard(subscription)
                    if not listeners:
                        del self._subscribers[run_id]

    def publish(self, run_id: str) -> None:
        """Tell the run's listeners that it changed (call after the commit)."""
        with self._lock:
            listeners = list(self._subscribers.get(run_id, ()))
        for subscription in listeners:
            subscription.notify()

    def listener_count(self, run_id: str) -> int:
        """How many listeners the run has (for tests and diagnostics)."""
        with self._lock:
            return len(self._subscribers.get(run_id, ()))
