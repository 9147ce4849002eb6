"""Point ingest: the hot write path, parsed by hand (see ``services/ingest.py`` for why)."""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from starlette.background import BackgroundTask

from trickscope_server.api.deps import RUN_ID_PATTERN, RunId
from trickscope_server.api.encoding import CheckedRoute, read_body
from trickscope_server.api.responses import OrjsonResponse
from trickscope_server.config import Settings
from trickscope_server.live import Broadcaster
from trickscope_server.schemas import IngestResult
from trickscope_server.services import compact, ingest
from trickscope_server.services.ingest_histograms import MAX_HISTOGRAM_BINS
from trickscope_server.storage import Database

_RUN_ID = re.compile(RUN_ID_PATTERN)


class IngestRoute(CheckedRoute):
    """A route of ``run_id`` and the request alone, called without FastAPI's per-request
    dependency solving and parameter validation, which cost ~0.25 ms of CPU a request after an
    idle gap here (about a tenth of a small batch's handling), paid by every batch of a run.
    The run id is checked as :data:`RunId` checks it, with the same 422; the endpoint's
    signature still documents the route."""

    def checked_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint = self.endpoint

        async def handle(request: Request) -> Response:
            run_id = request.path_params["run_id"]
            if _RUN_ID.fullmatch(run_id) is None:
                msg = f"String should match pattern '{RUN_ID_PATTERN}'"
                error = {"type": "string_pattern_mismatch", "loc": ("path", "run_id"), "msg": msg}
                raise RequestValidationError([{**error, "input": run_id}])
            response: Response = await endpoint(run_id, request)
            return response

        return handle


router = APIRouter(prefix="/api/v1", tags=["ingest"], route_class=IngestRoute)

_COLUMN = {"type": "string", "format": "byte"}  # base64 of little-endian int64 / float64
_NAME = {"type": "string", "minLength": 1}
_LAYERS = {"type": "array", "items": _NAME}
_BINS = {"type": "integer", "minimum": 1, "maximum": MAX_HISTOGRAM_BINS}
# The fields a per-name histogram entry and a histogram block share.
_HISTOGRAM_COLUMNS = {"bins": _BINS} | {
    key: _COLUMN for key in ("steps", "times", "lo", "hi", "nonfinite", "counts")
}


def _objects(**properties: Any) -> dict[str, Any]:
    """A list of objects, each with every one of ``properties``."""
    item = {"type": "object", "required": list(properties), "properties": properties}
    return {"type": "array", "items": item}


_BATCH_DOC = {
    "requestBody": {
        "required": True,
        "description": "trickscope_wire.PointBatch (docs/architecture.md, Wire format): packed "
        "columns, base64 of little-endian int64 steps and float64 values, NaN and ±Inf exact.",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["batch_id", "series"],
                    "properties": {
                        "wire_version": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": 4,
                            "description": "1; 2 with blocks; 3 with histogram_blocks; 4 with "
                            "a block's values as one column",
                        },
                        "batch_id": _NAME,
                        "series": _objects(
                            name=_NAME, steps=_COLUMN, values=_COLUMN, times=_COLUMN
                        ),
                        "blocks": _objects(
                            family=_NAME,
                            layers=_LAYERS,
                            steps=_COLUMN,
                            times=_COLUMN,
                            values={
                                "description": "one column of every layer's values, "
                                "row-major (wire version 4), or a column per layer",
                                "oneOf": [_COLUMN, {"type": "array", "items": _COLUMN}],
                            },
                        ),
                        "histograms": _objects(name=_NAME, **_HISTOGRAM_COLUMNS),
                        "histogram_blocks": _objects(
                            family=_NAME, layers=_LAYERS, **_HISTOGRAM_COLUMNS
                        ),
                    },
                }
            }
        },
    }
}


def _decode_and_store(
    db: Database, settings: Settings, run_id: str, body: bytes, encoding: str | None
) -> ingest.IngestOutcome:
    raw = ingest.decompress(body, encoding=encoding, max_bytes=settings.max_body_bytes)
    batch = ingest.parse_batch(
        raw, max_points=settings.max_batch_points, max_name=settings.max_series_name_chars
    )
    return ingest.ingest_batch(db, run_id=run_id, batch=batch)


@router.post("/runs/{run_id}/points", response_model=IngestResult, openapi_extra=_BATCH_DOC)
async def post_points(run_id: RunId, request: Request) -> OrjsonResponse:
    """Store a point batch in one transaction; a re-sent ``batch_id`` changes nothing."""
    state = request.app.state
    db: Database = state.db
    settings: Settings = state.settings
    live: Broadcaster = state.broadcaster
    body = await read_body(request, max_bytes=settings.max_body_bytes)
    # Decoding and the database work leave the event loop free for SSE streams.
    outcome = await run_in_threadpool(
        _decode_and_store, db, settings, run_id, body, request.headers.get("content-encoding")
    )
    if not outcome.duplicate:
        live.publish(run_id)  # after the commit, so listeners find the points
        state.seen_stamps.note(run_id)  # the batch stamped the run seen
    # Compaction runs after the answer is sent, so it never delays an acknowledgement.
    background = (
        BackgroundTask(compact.compact_series, db, series_ids=outcome.compact)
        if outcome.compact
        else None
    )
    answer = {
        "accepted": outcome.accepted,
        "duplicate": outcome.duplicate,
        "followed": outcome.followed,
    }
    return OrjsonResponse(answer, background=background)
