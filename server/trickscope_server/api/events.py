"""Server-Sent Events: live points of a run, resumable from any ingest cursor, and its health.

``points`` and ``status`` events carry the ingest cursor as their id; ``health`` events (the
``/health`` body, sent when the findings change) carry none, so they never move a resume point.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated

import orjson
from fastapi import APIRouter, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from trickscope_server.api.deps import BroadcasterDep, DatabaseDep, RunId, SettingsDep
from trickscope_server.api.encoding import CheckedRoute
from trickscope_server.errors import InvalidPayloadError, RunNotFoundError
from trickscope_server.live import Broadcaster
from trickscope_server.services import health, query, runs
from trickscope_server.services.limits import INT64_MAX
from trickscope_server.storage import Database

router = APIRouter(prefix="/api/v1", tags=["live"], route_class=CheckedRoute)

# Chunks per message: bounds one message's size when a client resumes far behind.
CHUNKS_PER_MESSAGE = 500


def _message(event: str, data: object, event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: ".encode() + orjson.dumps(data) + b"\n\n"


class _HealthPusher:
    """Re-diagnoses a run after new data, at most every ``interval`` seconds, and says when the
    findings changed (the first diagnosis of a stream always counts as a change)."""

    def __init__(self, db: Database, run_id: str, interval: float) -> None:
        self.db = db
        self.run_id = run_id
        self.interval = interval
        self.due = True  # what the stream resumed into is new to this client
        self.last_at = -float("inf")
        self.sent: bytes | None = None

    def wait_left(self, now: float) -> float | None:
        """Seconds until a due diagnosis may run; None when none is due."""
        return max(0.0, self.last_at + self.interval - now) if self.due else None

    async def changed(self, *, force: bool = False) -> dict[str, object] | None:
        """The new health report when one is due (or ``force``d) and differs from the last sent."""
        now = time.monotonic()
        if not (self.due or force) or (not force and now - self.last_at < self.interval):
            return None
        self.due, self.last_at = False, now
        try:
            report = await run_in_threadpool(health.health_report, self.db, run_id=self.run_id)
        except RunNotFoundError:
            return None  # deleted meanwhile: the points loop says so
        encoded = orjson.dumps(report)
        if encoded == self.sent:
            return None
        self.sent = encoded
        return report


async def stream_events(
    request: Request,
    *,
    db: Database,
    live: Broadcaster,
    run_id: str,
    after: int,
    poll_seconds: float,
    keepalive_seconds: float,
    health_seconds: float = 3.0,
    grace_seconds: float | None = None,
) -> AsyncIterator[bytes]:
    """The SSE byte stream of a run from cursor ``after`` until the client goes away.

    A ``status`` event reports each change of the run's status, liveness included: a running run
    silent for ``grace_seconds`` turns ``crashed``, and ``running`` again when it is heard from.
    """
    cursor = after
    sent_status = "running"  # a running run needs no status message; any other status does
    last_write = time.monotonic()
    pusher = _HealthPusher(db, run_id, health_seconds)
    with live.subscribe(run_id) as subscription:
        while not await request.is_disconnected():
            # Cleared before reading, so a commit landing during the read still wakes us.
            subscription.clear()
            result = await run_in_threadpool(
                query.read_events,
                db,
                run_id=run_id,
                after=cursor,
                limit=CHUNKS_PER_MESSAGE,
                grace_seconds=grace_seconds,
            )
            if result is None:
                yield _message("status", {"status": "deleted"})
                return
            new_cursor, series, status = result
            if series:
                yield _message("points", {"series": series, "status": status}, new_cursor)
                cursor = new_cursor
                last_write = time.monotonic()
                pusher.due = True
                continue  # there may be more behind this page: read again before waiting
            finished = status != sent_status
            if finished:
                yield _message("status", {"status": status}, cursor)
                sent_status = status
                last_write = time.monotonic()
            # A final status re-diagnoses at once: some checks judge only finished runs.
            report = await pusher.changed(force=finished)
            if report is not None:
                yield _message("health", report)
                last_write = time.monotonic()
            if time.monotonic() - last_write >= keepalive_seconds:
                yield b": keepalive\n\n"
                last_write = time.monotonic()
            # The timeout doubles as a poll, which keeps workers sharing PostgreSQL live.
            left = pusher.wait_left(time.monotonic())
            await subscription.wait(poll_seconds if left is None else min(poll_seconds, left))


@router.get(
    "/runs/{run_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def get_events(
    run_id: RunId,
    request: Request,
    db: DatabaseDep,
    live: BroadcasterDep,
    settings: SettingsDep,
    after: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Live points of a run; ``Last-Event-ID`` (a reconnecting browser) overrides ``after``."""
    if last_event_id:
        try:
            after = int(last_event_id)
            if not 0 <= after <= INT64_MAX:
                raise ValueError
        except ValueError:
            raise InvalidPayloadError(
                f"Last-Event-ID must be a non-negative ingest cursor, got {last_event_id!r:.40}",
                errors=[{"loc": ["header", "last-event-id"], "msg": "must be 0 to 2**63-1"}],
            ) from None
    await run_in_threadpool(runs.get_run, db, run_id=run_id)  # 404 before the stream starts
    return StreamingResponse(
        stream_events(
            request,
            db=db,
            live=live,
            run_id=run_id,
            after=after,
            poll_seconds=settings.sse_poll_seconds,
            keepalive_seconds=settings.sse_keepalive_seconds,
            health_seconds=settings.sse_health_seconds,
            grace_seconds=settings.liveness_grace_seconds,
        ),
        media_type="text/event-stream",
        # no-transform and X-Accel-Buffering keep proxies from buffering the stream.
        headers={"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"},
    )
