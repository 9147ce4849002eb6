"""The heartbeat: a training process that has nothing else to send says it is still alive."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Response

from trickscope_server.api.deps import DatabaseDep, RunId
from trickscope_server.api.encoding import DecodingRoute
from trickscope_server.services import liveness

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
