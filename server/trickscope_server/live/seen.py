"""When this process last stamped each run seen, so that a long wait for a follower stamps the
run only when nothing else did.

A run's ``last_seen_at`` is stamped by its point batches, its heartbeats and the start of its
agent's wait for a follower. A wait may be held for minutes (see ``api/liveness.py``), so it
re-stamps the run at its keep-alives, but only when this process has not stamped it for a
keep-alive: while the run's batches come at least that often, the wait writes nothing.
"""

from __future__ import annotations

import threading
import time


class SeenStamps:
    """The monotonic time at which this process last stamped each run's ``last_seen_at``.

    Only this process's stamps are known; another worker's make a stamp here look older than it
    is, never newer, so a wait may stamp a run twice but never lets it lapse. Safe from any
    thread. Runs not stamped for ``forget_after`` seconds are forgotten, which bounds its size.
    """

    def __init__(self, forget_after: float) -> None:
        self._forget_after = forget_after
        self._lock = threading.Lock()
        self._stamped: dict[str, float] = {}
        self._prune_at = time.monotonic() + forget_after

    def note(self, run_id: str) -> None:
        """The run's ``last_seen_at`` was just stamped (after the commit)."""
        now = time.monotonic()
        with self._lock:
            self._stamped[run_id] = now
            if now >= self._prune_at:
                self._prune_at = now + self._forget_after
                cutoff = now - self._forget_after
                self._stamped = {run: at for run, at in self._stamped.items() if at > cutoff}

    def age(self, run_id: str) -> float:
        """Seconds since this process last stamped the run (infinite if it did not lately)."""
        with self._lock:
            at = self._stamped.get(run_id)
        return float("inf") if at is None else time.monotonic() - at
