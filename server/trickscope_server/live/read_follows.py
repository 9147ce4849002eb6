"""A REST read of a running run's data counts as following it, as a live stream does.

While nobody follows a run, its agent holds its points for up to five minutes (see the agent's
``unfollowed_flush_secs``). A script that polls ``/points`` or ``/health`` without a stream would
then see points that old. So a read of a run's data (one run's, or a comparison's, for each run
it names) marks the run followed, at most once per
:data:`~trickscope_server.live.feed.FOLLOW_RENEW_SECONDS` per run in this process, and ends the
agent's wait for a follower (here and in other workers): the agent sends what it holds at once,
and at its fast cadence while the reads go on. The read itself answers with what is stored.

A glance is less: the runs list showing a running run (every 3 s while the page is open) asks
the agent for what it holds, once per :data:`GLANCE_RENEW_SECONDS`, without following the run.
The list then shows each running run's progress that fresh, while the agent stays at its slow
cadence: following every run a list shows would put fifty agents on a half-second cadence for
as long as the page stays open.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from trickscope_server.live.feed import FOLLOW_RENEW_SECONDS, FOLLOW_SECONDS
from trickscope_server.services import liveness
from trickscope_server.storage import Database

if TYPE_CHECKING:
    from trickscope_server.live import Broadcaster

log = logging.getLogger("trickscope.server")

_PRUNE_AT = 4096  # runs remembered before the lapsed ones are forgotten
# How often a glanced-at run's agent is asked for what it holds: the runs list refreshes every
# 3 s, so a listed run's progress is at most this old plus a refresh.
GLANCE_RENEW_SECONDS = 10.0


class ReadFollows:
    """Marks runs followed when their data is read over REST; safe from any thread."""

    def __init__(self, db: Database, broadcaster: Broadcaster) -> None:
        self._db = db
        self._broadcaster = broadcaster
        self._lock = threading.Lock()
        self._renew_at: dict[str, float] = {}  # run id -> monotonic time the mark is due again
        self._glance_at: dict[str, float] = {}  # run id -> monotonic time a glance is due again

    def looked(self, run_id: str) -> None:
        """Someone read the run's data. Never raises: a failed mark costs the agent's fast
        cadence, never the read."""
        if not self._due(self._renew_at, run_id, FOLLOW_RENEW_SECONDS):
            return
        try:
            marked = liveness.mark_running_followed(self._db, run_id=run_id, seconds=FOLLOW_SECONDS)
        except Exception as exc:
            log.warning("could not mark run %s as followed by a reader: %s", run_id, exc)
            return
        if marked:
            self._broadcaster.followed(run_id)

    def glanced(self, run_ids: Iterable[str]) -> None:
        """Someone was shown these running runs: ask their agents for what they hold, each at
        most once per :data:`GLANCE_RENEW_SECONDS`. Never raises, and touches no database."""
        for run_id in run_ids:
            if self._due(self._glance_at, run_id, GLANCE_RENEW_SECONDS):
                self._broadcaster.glanced(run_id)

    def _due(self, due_at: dict[str, float], run_id: str, renew_seconds: float) -> bool:
        """Whether the run is due in ``due_at`` (then due again ``renew_seconds`` from now)."""
        now = time.monotonic()
        with self._lock:
            if due_at.get(run_id, 0.0) > now:
                return False
            if len(due_at) >= _PRUNE_AT:
                lapsed = [key for key, due in due_at.items() if due <= now]
                for key in lapsed:
                    del due_at[key]
            due_at[run_id] = now + renew_seconds
        return True
