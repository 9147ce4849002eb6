"""Request edges: a size-capped body read, ``Content-Encoding: gzip`` on every JSON route, and
the text and number checks every route makes before anything reaches a service.

The agent gzips any body over a few KiB, so a run with a large config or a model with many
layers arrives compressed on the plain JSON routes too, not only on the point ingest (which
reads and decompresses its own body off the event loop).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.routing import APIRoute
from starlette.types import Message

from trickscope_server.config import Settings
from trickscope_server.errors import InvalidPayloadError, PayloadTooLargeError
from trickscope_server.services.ingest import decompress
from trickscope_server.services.limits import check_json_body, check_query_text


async def read_body(request: Request, *, max_bytes: int) -> bytes:
    """The request body as sent, refused past ``max_bytes`` whatever ``Content-Length`` says."""
    too_large = PayloadTooLargeError(
        f"body is larger than the server's limit of {max_bytes} bytes "
        "(TRICKSCOPE_MAX_BODY_BYTES): send smaller batches"
    )
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise InvalidPayloadError(f"Content-Length {declared!r:.40} is not a number") from None
        if length > max_bytes:
            raise too_large
    # The header can lie (or be absent with chunked encoding): count what actually arrives.
    parts: list[bytes] = []
    size = 0
    async for part in request.stream():
        size += len(part)
        if size > max_bytes:
            raise too_large
        parts.append(part)
    return b"".join(parts)


def _decoded(request: Request, body: bytes) -> Request:
    """A request that reads as the identity-encoded ``body``."""
    headers = [
        (name, value)
        for name, value in request.scope["headers"]
        if name not in (b"content-encoding", b"content-length")
    ]
    headers.append((b"content-length", str(len(body)).encode()))
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await request.receive()  # later reads wait for the disconnect, as usual

    return Request({**request.scope, "headers": headers}, receive)


class CheckedRoute(APIRoute):
    """A route whose query and path parameters must be storable text (no NUL, no lone
    surrogates): a 422 naming the parameter, never a database error later."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = self.checked_handler()

        async def check_then_handle(request: Request) -> Response:
            check_query_text(request.query_params.multi_items(), "query")
            check_query_text(request.path_params.items(), "path")
            return await handle(request)

        return check_then_handle

    def checked_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """What handles a request once its parameters passed: FastAPI's own handler."""
        return super().get_route_handler()


# Bodies up to this size are checked on the event loop; larger ones in the thread pool.
_INLINE_CHECK_BYTES = 64 << 10


class DecodingRoute(CheckedRoute):
    """A JSON body route: the body is read under ``max_body_bytes`` (413 past it), decoded when
    ``Content-Encoding: gzip`` (the agent gzips any body over a few KiB) and checked for text
    and numbers no back end can store (422 naming the field), all before FastAPI parses it.

    Decoding happens before the route's own body handling, so a bad body gets the same problem
    responses as on the ingest route (415, 413, 422) rather than a generic parse error.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def decode_then_handle(request: Request) -> Response:
            if request.method not in _BODY_METHODS:
                return await handle(request)
            settings: Settings = request.app.state.settings
            limit = settings.max_body_bytes
            body = await read_body(request, max_bytes=limit)
            encoding = request.headers.get("content-encoding")
            decode = encoding is not None and encoding.strip().lower() != "identity"
            if decode or len(body) > _INLINE_CHECK_BYTES:
                # Off the event loop, as ingest does: SSE streams keep flowing meanwhile.
                body = await run_in_threadpool(_decoded_checked, body, encoding, limit)
            else:
                check_json_body(body)
            return await handle(_decoded(request, body))

        return decode_then_handle


_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def _decoded_checked(body: bytes, encoding: str | None, max_bytes: int) -> bytes:
    raw = decompress(body, encoding=encoding, max_bytes=max_bytes)
    check_json_body(raw)
    return raw
