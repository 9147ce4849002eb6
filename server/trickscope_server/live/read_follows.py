"""A REST read of a running run's data counts as following it, as a live stream does.

While nobody follows a run, its agent holds its points for up to a minute (see the agent's
``unfollowed_flush_secs``). A script that polls ``/points`` or ``/health`` without a stream would
then see points that old. So a read of a run's data (one run's, or a comparison's, for each run
it names) marks the run followed, at most once per
:data:`~trickscope_server.live.feed.FOLLOW_RENEW_SECONDS` per run in this process, and ends the
agent's wait for a follower (here and in other workers): the agent sends what it holds at once,
and at its fast cadence while the reads go on. The read itself answers with what is stored.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from trickscope_server.live.feed import FOLLOW_RENEW_SECONDS, FOLLOW_SECONDS
from trickscope_server.services import liveness
from trickscope_server.storage import Database

if TYPE_CHECKING:
    from trickscope_server.live import Broadcaster

log = logging.getLogger("trickscope.server")

_PRUNE_AT = 4096  # runs remembered before the lapsed ones are forgotten


class ReadFollows:
    """Marks runs followed when their data is read over REST; safe from any thread."""

    def __init__(self, db: Database, broadcaster: Broadcaster) -> None:
        self._db = db
        self._broadcaster = broadcaster
        self._lock = threading.Lock()
        self._renew_at: dict[str, float] = {}  # run id -> monotonic time the mark is due again

    def looked(self, run_id: str) -> None:
        """Someone read the run's data. Never raises: a failed mark costs the agent's fast
        cadence, never the read."""
        now = time.monotonic()
        with self._lock:
            if self._renew_at.get(run_id, 0.0) > now:
                return
            if len(self._renew_at) >= _PRUNE_AT:
                self._renew_at = {k: due for k, due in self._renew_at.items() if due > now}
            self._renew_at[run_id] = now + FOLLOW_RENEW_SECONDS
        try:
            marked = liveness.mark_running_followed(self._db, run_id=run_id, seconds=FOLLOW_SECONDS)
        except Exception as exc:
            log.warning("could not mark run %s as followed by a reader: %s", run_id, exc)
            return
        if marked:
            self._broadcaster.followed(run_id)
