"""The training process's side of liveness: its heartbeat, and its wait for a live follower."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Response
from fastapi.concurrency import run_in_threadpool

from trickscope_server.api.deps import BroadcasterDep, DatabaseDep, RunId, SettingsDep
from trickscope_server.api.encoding import DecodingRoute
from trickscope_server.schemas import FollowedOut
from trickscope_server.services import liveness

# The longest wait a request may ask for; the server's follow_wait_seconds may cut it shorter.
MAX_FOLLOW_WAIT_SECONDS = 60.0

router = APIRouter(prefix="/api/v1", tags=["runs"], route_class=DecodingRoute)


@router.post(
    "/runs/{run_id}/heartbeat",
    status_code=204,
    response_class=Response,
    responses={404: {"description": "No run with this id (a problem document)."}},
)
def post_heartbeat(
    run_id: RunId,
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
    return Response(status_code=204)


@router.get(
    "/runs/{run_id}/followed",
    response_model=FollowedOut,
    responses={404: {"description": "No run with this id (a problem document)."}},
)
async def get_followed(
    run_id: RunId,
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
) -> FollowedOut:
    """Whether someone follows the run live; with ``wait``, the answer is held until someone
    does (a dashboard opens the run's page, in any worker) or ``wait`` seconds pass (at most the
    server's ``follow_wait_seconds``).

    The agent holds this request while its run is not followed and it sends at its slow cadence
    (``unfollowed_flush_secs``), so that a page that opens gets live points at once. A wait
    (``wait`` > 0) stamps the run as seen, like a heartbeat: the agent sends none while it holds
    one.
    """
    async with live.follow_wait(run_id) as wait_followed:
        # A held wait is the training process's: it also says the run is alive.
        followed = await run_in_threadpool(liveness.is_followed, db, run_id=run_id, seen=wait > 0)
        if not followed and wait > 0:
            followed = await wait_followed(min(wait, settings.follow_wait_seconds))
    return FollowedOut(followed=followed)
