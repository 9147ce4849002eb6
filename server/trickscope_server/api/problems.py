"""RFC 9457 problem responses for every error, so clients never have to parse HTML or guess."""

from __future__ import annotations

import logging
import uuid
from typing import Any, cast

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from trickscope_server.errors import PROBLEM_TYPE_PREFIX, TrickscopeError

log = logging.getLogger("trickscope_server")

PROBLEM_JSON = "application/problem+json"


def problem(
    request: Request,
    *,
    status: int,
    title: str,
    slug: str,
    detail: str,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """A ``application/problem+json`` response."""
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_PREFIX + slug,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
    }
    if errors is not None:
        body["errors"] = errors
    return Response(orjson.dumps(body), status, headers=headers, media_type=PROBLEM_JSON)


async def _domain(request: Request, exc: Exception) -> Response:
    exc = cast(TrickscopeError, exc)  # registered for this type only
    return problem(
        request,
        status=exc.status,
        title=exc.title,
        slug=exc.slug,
        detail=exc.detail,
        errors=exc.errors,
    )


def _loc(loc: Any) -> list[str | int]:
    return [part if isinstance(part, int) else str(part) for part in loc]


async def _validation(request: Request, exc: Exception) -> Response:
    exc = cast(RequestValidationError, exc)
    errors = [{"loc": _loc(e.get("loc", ())), "msg": str(e.get("msg", ""))} for e in exc.errors()]
    summary = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:5])
    return problem(
        request,
        status=422,
        title="Invalid request",
        slug="invalid-request",
        detail=summary or "the request does not match the API",
        errors=errors,
    )


async def _http(request: Request, exc: Exception) -> Response:
    exc = cast(StarletteHTTPException, exc)
    title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "HTTP error")
    return problem(
        request,
        status=exc.status_code,
        title=title,
        slug=title.lower().replace(" ", "-"),
        detail=str(exc.detail),
        headers=dict(exc.headers) if exc.headers else None,
    )


async def _unexpected(request: Request, exc: Exception) -> Response:
    # The traceback goes to the log only; the client gets an id to quote when reporting it.
    request_id = uuid.uuid4().hex
    log.error("unhandled error, request id %s", request_id, exc_info=exc)
    return problem(
        request,
        status=500,
        title="Internal server error",
        slug="internal-error",
        detail=f"the server failed to answer; quote request id {request_id} when reporting it",
        headers={"X-Request-ID": request_id},
    )


def install_problem_handlers(app: FastAPI) -> None:
    """Render every error of ``app`` as a problem response."""
    app.add_exception_handler(TrickscopeError, _domain)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)
