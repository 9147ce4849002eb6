"""Server-Sent Events: live points of a run, resumable from any ingest cursor, and its health.

``points`` and ``status`` events carry the ingest cursor as their id; ``health`` events (the
``/health`` body, sent when the findings change) carry none, so they never move a resume point.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from trickscope_server.api.deps import BroadcasterDep, DatabaseDep, RunId, SettingsDep
from trickscope_server.api.encoding import CheckedRoute
from trickscope_server.errors import InvalidPayloadError
from trickscope_server.live import Broadcaster
from trickscope_server.services import runs
from trickscope_server.services.limits import INT64_MAX

router = APIRouter(prefix="/api/v1", tags=["live"], route_class=CheckedRoute)


async def stream_events(
    request: Request,
    *,
    live: Broadcaster,
    run_id: str,
    after: int,
    keepalive_seconds: float,
) -> AsyncIterator[bytes]:
    """The SSE byte stream of a run from cursor ``after`` until the client goes away.

    The run's reader (shared with every other stream of the run in this process) queues the
    messages; a ``status`` event reports each change of the run's status, liveness included.
    """
    # Woken at least once a second to notice a client that went away while nothing was sent.
    tick = min(1.0, keepalive_seconds)
    async with live.subscribe(run_id, after, idle_seconds=tick) as subscriber:
        last_write = time.monotonic()
        while True:
            message = await subscriber.next()
            if message == b"":
                return  # the final message (run deleted) was sent
            if message is not None:
                yield message
                last_write = time.monotonic()
                continue
            # Checked when idle only: the check costs a cancel scope, and with hundreds of
            # streams per batch that adds up (the server also cancels a stream whose client left).
            if await request.is_disconnected():
                return
            if time.monotonic() - last_write >= keepalive_seconds:
                yield b": keepalive\n\n"
                last_write = time.monotonic()


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
            live=live,
            run_id=run_id,
            after=after,
            keepalive_seconds=settings.sse_keepalive_seconds,
        ),
        media_type="text/event-stream",
        # no-transform and X-Accel-Buffering keep proxies from buffering the stream.
        headers={"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"},
    )
