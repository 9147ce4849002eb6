"""Run liveness: a ``running`` run that has gone silent is shown as ``crashed``.

Every accepted request for a run (its creation, point batches, declarations, ``finish``, the
agent's heartbeat and its wait for a live follower) stamps ``runs.last_seen_at``. The status
shown is derived at read time:

- ``running`` stored and last seen more than the grace period ago: ``crashed``;
- anything else: the stored status. A run never seen (stored before liveness existed) keeps its
  status, and ``finished``/``failed`` are final whatever the clock says.

Nothing is written when a run goes silent, so a late request (a batch retried after a network
outage, a heartbeat after a long pause) makes it ``running`` again by itself. SQL listings use
the same rule (``storage.runs.shown_status``) so filters, sorting and paging agree with it.

The other way round, a live stream tells the agent someone follows its run:
``runs.followed_until``, renewed while the stream lasts, rides back on each ingest answer.
"""

from __future__ import annotations

import time

from trickscope_server.errors import RunNotFoundError
from trickscope_server.storage import Database
from trickscope_server.storage import runs as store


def silent_before(grace_seconds: float, *, now: float | None = None) -> float:
    """The cutoff: a running run last seen before this Unix time reads as ``crashed``."""
    return (time.time() if now is None else now) - grace_seconds


def shown_status(status: str, last_seen_at: float | None, cutoff: float | None) -> str:
    """The status a reader sees; ``cutoff`` None (no liveness judgement) keeps the stored one."""
    if cutoff is not None and status == "running" and last_seen_at is not None:
        if last_seen_at < cutoff:
            return "crashed"
    return status


def heartbeat(db: Database, *, run_id: str) -> None:
    """Record that the run's training process is alive; a 404 problem for an unknown run."""
    with db.transaction() as session:
        if not store.mark_seen(session, run_id=run_id, now=time.time()):
            raise _no_run(run_id)


def is_followed(db: Database, *, run_id: str, seen: bool = False) -> bool:
    """Whether a live stream follows the run now (in any worker); a 404 problem for an unknown
    run. ``seen``: the training process asks (its wait for a follower), which also stamps the
    run's ``last_seen_at``, as a heartbeat would."""
    if seen:
        with db.transaction() as session:
            until = store.seen_followed_until(session, run_id=run_id, now=time.time())
    else:
        with db.reader() as session:
            until = store.followed_until(session, run_id=run_id)
    if until is None:
        raise _no_run(run_id)
    return until > time.time()


def mark_followed(db: Database, *, run_id: str, seconds: float) -> None:
    """Record that a live stream follows the run for the next ``seconds`` (renewed while it
    lasts): ingest answers then say ``followed`` and the agent sends at its fast cadence."""
    with db.transaction() as session:
        store.mark_followed(session, run_id=run_id, until=time.time() + seconds)


def mark_running_followed(db: Database, *, run_id: str, seconds: float) -> bool:
    """:func:`mark_followed` for a run still ``running`` (a reader of a finished run's data
    follows nothing); False when it is not, or there is no such run."""
    with db.transaction() as session:
        return store.mark_running_followed(session, run_id=run_id, until=time.time() + seconds)


def _no_run(run_id: str) -> RunNotFoundError:
    return RunNotFoundError(
        f"run {run_id!r} does not exist: create it with PUT /api/v1/runs/{run_id} first"
    )
