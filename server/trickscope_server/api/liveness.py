"""The training process's side of liveness: its heartbeat, and its wait for a live follower."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from trickscope_server.api.deps import BroadcasterDep, DatabaseDep, RunId, SettingsDep
from trickscope_server.api.encoding import DecodingRoute
from trickscope_server.errors import RunNotFoundError
from trickscope_server.live import WaitEnd
from trickscope_server.live.seen import SeenStamps
from trickscope_server.schemas import FollowedOut
from trickscope_server.services import liveness
from trickscope_server.storage import Database

log = logging.getLogger("trickscope.server")

# The longest wait a request may ask for; the server's follow_wait_seconds may cut it shorter.
MAX_FOLLOW_WAIT_SECONDS = 3600.0

router = APIRouter(prefix="/api/v1", tags=["runs"], route_class=DecodingRoute)


@router.post(
    "/runs/{run_id}/heartbeat",
    status_code=204,
    response_class=Response,
    responses={404: {"description": "No run with this id (a problem document)."}},
)
def post_heartbeat(
    run_id: RunId,
    request: Request,
    db: DatabaseDep,
    body: Annotated[
        dict[str, Any] | None,
        Body(title="Heartbeat", description="{} (members are ignored); may be left out."),
    ] = None,
) -> Response:
    """Record that the run's training process is alive (204, no body).

    The agent sends one every ``heartbeat_secs`` (30 s) when it has sent nothing else meanwhile;
    every other request for the run counts as well. A running run that sends nothing for
    ``liveness_grace_seconds`` reads as crashed, and running again from its next request.
    """
    liveness.heartbeat(db, run_id=run_id)
    request.app.state.seen_stamps.note(run_id)
    return Response(status_code=204)


@router.get(
    "/runs/{run_id}/followed",
    response_model=FollowedOut,
    responses={404: {"description": "No run with this id (a problem document)."}},
)
async def get_followed(
    run_id: RunId,
    request: Request,
    db: DatabaseDep,
    live: BroadcasterDep,
    settings: SettingsDep,
    wait: Annotated[
        float,
        Query(
            ge=0,
            le=MAX_FOLLOW_WAIT_SECONDS,
            description="Seconds to hold the answer while nobody follows the run (0: answer now).",
        ),
    ] = 0.0,
) -> Response | FollowedOut:
    """Whether someone follows the run live; with ``wait``, the answer is held until someone
    does (a dashboard opens the run's page, in any worker), someone glances at the run (the runs
    list shows it: ``glanced``, send what is held now) or ``wait`` seconds pass (at most the
    server's ``follow_wait_seconds``).

    The agent holds this request while its run is not followed and it sends at its slow cadence
    (``unfollowed_flush_secs``), so that a page that opens gets live points at once. A wait
    (``wait`` > 0) says the run is alive, like a heartbeat: the server stamps it seen when the
    wait starts and, while it is held, at each keep-alive when nothing else stamped it since the
    last one; the agent sends no heartbeat meanwhile.

    A wait longer than a keep-alive (``follow_keepalive_seconds``, at most a third of
    ``liveness_grace_seconds``) is answered at once with its headers, then a space every
    keep-alive (so that no proxy's idle timeout cuts it), then the JSON document: leading
    whitespace, which every JSON parser skips.
    """
    seen: SeenStamps = request.app.state.seen_stamps
    held = AsyncExitStack()
    # Registered before the read, so that no follower who starts in between is missed.
    wait_followed = await held.enter_async_context(live.follow_wait(run_id))
    try:
        followed = await run_in_threadpool(liveness.is_followed, db, run_id=run_id, seen=wait > 0)
    except BaseException:
        await held.aclose()
        raise
    if wait > 0:
        seen.note(run_id)
    hold = min(wait, settings.follow_wait_seconds)
    tick = min(settings.follow_keepalive_seconds, settings.liveness_grace_seconds / 3)
    if followed or hold <= tick:
        end = None
        async with held:
            if not followed and hold > 0:
                end = await wait_followed(hold)
        return FollowedOut(followed=followed or end is WaitEnd.FOLLOWED,
                           glanced=end is WaitEnd.GLANCED)  # fmt: skip
    answer = _held_answer(held, wait_followed, hold=hold, tick=tick, run_id=run_id, db=db,
                          seen=seen)  # fmt: skip
    return StreamingResponse(answer, media_type="application/json")


async def _held_answer(
    held: AsyncExitStack,
    wait_followed: Callable[[float], Awaitable[WaitEnd | None]],
    *,
    hold: float,
    tick: float,
    run_id: str,
    db: Database,
    seen: SeenStamps,
) -> AsyncIterator[bytes]:
    """A long wait's body: a space every ``tick`` seconds until someone follows the run or
    ``hold`` seconds pass, then the answer. The run is stamped seen at a tick when this process
    has not stamped it for ``tick`` seconds: it is then never unseen for more than two ticks,
    a third of the grace left for a slow agent."""
    async with held:
        ends = time.monotonic() + hold
        end = None
        while (left := ends - time.monotonic()) > 0:
            end = await wait_followed(min(tick, left))
            if end is not None:
                break
            yield b" "
            if seen.age(run_id) >= tick:
                try:
                    await run_in_threadpool(liveness.heartbeat, db, run_id=run_id)
                except RunNotFoundError:
                    break  # deleted while its agent waited: nobody will follow it
                except Exception as exc:  # a busy database: the next tick tries again
                    log.warning("could not stamp run %s seen during its wait: %s", run_id, exc)
                else:
                    seen.note(run_id)
        answer = FollowedOut(followed=end is WaitEnd.FOLLOWED, glanced=end is WaitEnd.GLANCED)
        yield orjson.dumps(answer.model_dump())
