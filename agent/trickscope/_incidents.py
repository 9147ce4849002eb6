"""Counting what went wrong inside the agent, and saying so once.

After setup the agent never raises into the training loop: failures are counted here and logged
the first time each kind happens, so a broken hook cannot flood the training log either. Only
an unexpected exception (a bug, or a value the agent cannot use) is logged with its traceback;
conditions the agent handles (an outage, a refused request, thinning) are one line each.
"""

from __future__ import annotations

import logging
import threading
import time

logger = logging.getLogger("trickscope")


class Incidents:
    """Error and thinning counters shared by the training and sender threads."""

    def __init__(self) -> None:
        self.errors = 0
        self.thinned = 0
        self.by_kind: dict[str, int] = {}
        self._lock = threading.Lock()
        self._last_log: dict[str, float] = {}

    def error(self, kind: str, exc: BaseException, *, traceback: bool = True) -> None:
        """Count an exception of ``kind``; log it the first time, with its traceback unless
        ``traceback`` is False (a value the caller passed, whose message says it all)."""
        with self._lock:
            self.errors += 1
            count = self.by_kind.get(kind, 0) + 1
            self.by_kind[kind] = count
        if count == 1:
            logger.warning(
                "trickscope: %s failed (%s: %s); training continues, later failures of this "
                "kind are counted silently",
                kind,
                type(exc).__name__,
                exc,
                exc_info=exc if traceback else None,
            )

    def thin(self, reason: str) -> None:
        """Count one skipped sample of ``watch``'s optional per-layer statistics or histograms
        (logged values are never skipped); warn once per reason."""
        self.thinned += 1  # a lost increment under a race only undercounts a warning metric
        key = f"thin:{reason}"
        if key not in self.by_kind:
            self.by_kind[key] = 1
            logger.warning(
                "trickscope: skipped a step of per-layer statistics (%s); raise `every` or "
                "queue_size if this persists. Skipped steps are counted as "
                "agent/thinned_samples; logged values are never skipped.",
                reason,
            )

    def throttled(self, kind: str, message: str, *args: object, every: float = 30.0) -> None:
        """Log ``message`` at most once per ``every`` seconds for ``kind``."""
        now = time.monotonic()
        if now - self._last_log.get(kind, -every) >= every:
            self._last_log[kind] = now
            logger.warning(message, *args)
