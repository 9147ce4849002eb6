"""Domain errors: each carries the HTTP status, title and type slug of its problem response.

The API renders them as RFC 9457 ``application/problem+json`` (see ``api/problems.py``); services
raise them without knowing about HTTP frameworks.
"""

from __future__ import annotations

from typing import Any

PROBLEM_TYPE_PREFIX = "urn:trickscope:problem:"


class TrickscopeError(Exception):
    """Base of every error that becomes a problem response."""

    status = 400
    title = "Bad request"
    slug = "bad-request"

    def __init__(self, detail: str, *, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors

    @property
    def type(self) -> str:
        """The problem ``type`` URI."""
        return PROBLEM_TYPE_PREFIX + self.slug


class NotFoundError(TrickscopeError):
    """Something named in the request does not exist."""

    status = 404
    title = "Not found"
    slug = "not-found"


class RunNotFoundError(NotFoundError):
    """The run id is unknown."""

    title = "Run not found"
    slug = "run-not-found"


class SeriesNotFoundError(NotFoundError):
    """The run has no series of that name."""

    title = "Series not found"
    slug = "series-not-found"


class InvalidPayloadError(TrickscopeError):
    """The body or the query parameters do not match the contract."""

    status = 422
    title = "Invalid request"
    slug = "invalid-request"


class UnsupportedWireVersionError(TrickscopeError):
    """The agent speaks a wire version this server does not."""

    status = 400
    title = "Unsupported wire version"
    slug = "unsupported-wire-version"


class PayloadTooLargeError(TrickscopeError):
    """The body (or its decompressed form, or its point count) is over the server's limit."""

    status = 413
    title = "Payload too large"
    slug = "payload-too-large"


class UnsupportedEncodingError(TrickscopeError):
    """A ``Content-Encoding`` other than identity or gzip."""

    status = 415
    title = "Unsupported content encoding"
    slug = "unsupported-content-encoding"


class ExportUnavailableError(TrickscopeError):
    """An export format whose optional dependency is not installed."""

    status = 501
    title = "Export format unavailable"
    slug = "export-unavailable"
