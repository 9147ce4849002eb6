"""HTTP for the client: GETs over one keep-alive connection, and streamed downloads.

Standard library only (``http.client``), like the agent's sender: reading runs needs no extra
package. Every error the server answers is an RFC 9457 problem document; it becomes an
:class:`ApiError` that keeps the document's status, title and detail.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

# A keep-alive connection the server closed while idle (uvicorn does after 5 s): not an outage.
_STALE = (
    BrokenPipeError,
    ConnectionResetError,
    ConnectionAbortedError,
    http.client.RemoteDisconnected,
)
QueryParams = Mapping[str, "str | int | float | bool | Sequence[str] | None"]


class ApiError(Exception):
    """The server refused a request, or could not be reached.

    Attributes:
        status: The HTTP status (404, 422, ...); None when the server did not answer.
        title: The problem's short title (e.g. ``"Invalid request"``).
        detail: What was wrong, in the server's words.
        errors: Per-parameter errors of a 422 (``[{"loc": [...], "msg": ...}]``), else ``[]``.
    """

    def __init__(
        self,
        status: int | None,
        title: str,
        detail: str,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        prefix = f"{status} {title}" if status is not None else title
        super().__init__(f"{prefix}: {detail}")
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors or []


class ServerUnreachable(ApiError):
    """No answer from the server: refused connection, unknown host, timeout."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(None, "Server unreachable", f"could not reach {url}: {reason}")
        self.url = url


def problem_error(status: int, body: bytes, reason: str = "") -> ApiError:
    """The :class:`ApiError` of an error answer: its problem document, else its text."""
    try:
        problem = json.loads(body)
    except ValueError:
        problem = None
    if isinstance(problem, dict):
        detail = problem.get("detail")
        errors = problem.get("errors")
        return ApiError(
            status,
            str(problem.get("title") or reason or "HTTP error"),
            str(detail) if detail is not None else body[:300].decode("utf-8", "replace"),
            errors if isinstance(errors, list) else None,
        )
    text = body[:300].decode("utf-8", "replace").strip()
    return ApiError(status, reason or "HTTP error", text or f"the server answered {status}")


def path_of(*parts: str) -> str:
    """An API path from segments, each quoted (a run id can never escape its segment)."""
    return "/" + "/".join(quote(part, safe="") for part in parts)


class Http:
    """GETs against ``<url>/api/v1``, sharing one keep-alive connection between calls."""

    def __init__(self, url: str, *, token: str | None, timeout: float) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url={url!r} is not an http(s) URL, e.g. http://127.0.0.1:8000")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/") + "/api/v1"
        self._headers = {"Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()  # one request at a time on the shared connection

    def _new_connection(self) -> http.client.HTTPConnection:
        kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        return kind(self._host, self._port, timeout=self.timeout)

    def _target(self, path: str, params: QueryParams | None) -> str:
        """The request target: a list value repeats its parameter, None leaves it out."""
        pairs = [
            (key, item)
            for key, value in (params or {}).items()
            if value is not None
            for item in (value if isinstance(value, list | tuple) else [value])
        ]
        return self._prefix + path + (f"?{urlencode(pairs)}" if pairs else "")

    def get_bytes(self, path: str, params: QueryParams | None = None) -> bytes:
        """The body of a successful GET.

        Raises:
            ApiError: the server answered an error (its problem document).
            ServerUnreachable: no answer.
        """
        target = self._target(path, params)
        with self._lock:
            while True:
                reused = self._conn is not None
                if self._conn is None:
                    self._conn = self._new_connection()
                try:
                    self._conn.request("GET", target, headers=self._headers)
                    response = self._conn.getresponse()
                    body = response.read()
                    break
                except _STALE as exc:
                    self.close_connection()
                    if not reused:  # a fresh connection failed: the server is gone
                        raise ServerUnreachable(self.url, f"{type(exc).__name__}: {exc}") from None
                except (OSError, http.client.HTTPException) as exc:
                    self.close_connection()
                    raise ServerUnreachable(self.url, f"{type(exc).__name__}: {exc}") from None
            if response.will_close:
                self.close_connection()
        if not 200 <= response.status < 300:
            raise problem_error(response.status, body, response.reason)
        return body

    def get_json(self, path: str, params: QueryParams | None = None) -> Any:
        """The JSON body of a successful GET (see :meth:`get_bytes`)."""
        return json.loads(self.get_bytes(path, params))

    def stream(
        self, path: str, params: QueryParams | None = None, chunk_size: int = 1 << 20
    ) -> Iterator[tuple[int | None, bytes]]:
        """A GET's body piece by piece, on a connection of its own, each piece with the
        answer's ``Content-Length`` (None when the server streams without one)."""
        conn = self._new_connection()
        try:
            try:
                conn.request("GET", self._target(path, params), headers=self._headers)
                response = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                raise ServerUnreachable(self.url, f"{type(exc).__name__}: {exc}") from None
            if not 200 <= response.status < 300:
                raise problem_error(response.status, response.read(), response.reason)
            length = response.getheader("Content-Length")
            total = int(length) if length and length.isdigit() else None
            while True:
                try:
                    piece = response.read1(chunk_size) if chunk_size else response.read()
                except (OSError, http.client.HTTPException) as exc:
                    raise ServerUnreachable(self.url, f"{type(exc).__name__}: {exc}") from None
                if not piece:
                    return
                yield total, piece
        finally:
            conn.close()

    def close_connection(self) -> None:
        """Drop the shared connection (the next request opens a new one)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
