"""One HTTP/1.1 keep-alive connection to the server (standard library ``http.client``)."""

from __future__ import annotations

import gzip
import http.client
import json
import random
import socket
import time
from urllib.parse import urlsplit

GZIP_ABOVE = 4096  # bytes; smaller bodies are not worth the CPU
# Hosts on this machine: a body sent there crosses no network, so compressing it would only
# cost CPU on both sides (~10 ms here and ~2 ms in the server per 50,000-point batch).
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
_RETRYABLE = frozenset({408, 425, 429, 500, 502, 503, 504})
_STALE = (
    BrokenPipeError,
    ConnectionResetError,
    ConnectionAbortedError,
    http.client.RemoteDisconnected,
)


class Rejected(ConnectionError):
    """The server answered with a status that retrying cannot fix (4xx)."""

    def __init__(self, status: int, detail: str, where: str = "") -> None:
        prefix = f"{where}: " if where else ""
        super().__init__(f"{prefix}the server answered {status}: {detail}")
        self.status = status
        self.detail = detail


class Unavailable(ConnectionError):
    """The server did not answer, or answered with a status worth retrying.

    ``status`` is the status it answered, ``None`` when it did not answer at all.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def backoff(attempt: int, *, base: float = 0.25, cap: float = 10.0) -> float:
    """Seconds to wait before retry ``attempt`` (1-based): exponential, capped, jittered."""
    return min(cap, base * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)


def problem_detail(answer: bytes) -> str:
    """What an error answer says: a problem document's ``detail`` (RFC 9457), else its text."""
    try:
        problem = json.loads(answer)
    except ValueError:
        problem = None
    if isinstance(problem, dict) and isinstance(problem.get("detail"), str):
        return problem["detail"][:500]
    return answer[:300].decode("utf-8", "replace")


class Connection:
    """A reusable connection; reconnects after any failure.

    Args:
        url: The server's base URL.
        timeout: Seconds per request.
        token: Sent as ``Authorization: Bearer <token>``.
        compress: gzip bodies over ``GZIP_ABOVE`` bytes; by default only for a server that is
            not on this machine (``localhost``, ``127.0.0.1``, ``::1``).
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        token: str | None = None,
        compress: bool | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url={url!r} is not an http(s) URL")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self.compress = parts.hostname not in LOOPBACK_HOSTS if compress is None else compress
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self.timeout = timeout
        self._auth = {"Authorization": f"Bearer {token}"} if token else {}
        self._conn: http.client.HTTPConnection | None = None
        self._aborted = False
        self.answer = b""  # the body of the last answer that was a success (2xx)

    def _connect(self, timeout: float) -> http.client.HTTPConnection:
        if self._conn is None:
            kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._conn = kind(self._host, self._port, timeout=timeout)
        elif self._conn.sock is not None:
            self._conn.sock.settimeout(timeout)
        self._conn.timeout = timeout
        return self._conn

    def send(self, method: str, path: str, body: bytes, *, timeout: float | None = None) -> int:
        """Send one JSON request and read the whole answer.

        Raises:
            Unavailable: network error, timeout, or a retryable status.
            Rejected: a status that a retry cannot fix.
        """
        # Every body is JSON and says so: the server refuses other content types (CSRF).
        headers = {"Content-Type": "application/json", "Accept": "application/json", **self._auth}
        if self.compress and len(body) > GZIP_ABOVE:
            body = gzip.compress(body, compresslevel=5)
            headers["Content-Encoding"] = "gzip"
        timeout = self.timeout if timeout is None else max(timeout, 0.05)
        while True:
            if self._aborted:
                raise Unavailable(f"{method} {path}: aborted (the run is finishing)")
            reused = self._conn is not None and self._conn.sock is not None
            conn = self._connect(timeout)
            try:
                conn.request(method, self._prefix + path, body=body, headers=headers)
                response = conn.getresponse()
                answer = response.read()
                break
            except _STALE as exc:
                # The server closed an idle keep-alive connection (uvicorn does after 5 s):
                # not an outage. Every request is idempotent, so resend once on a new one.
                self.close()
                if not reused:
                    raise Unavailable(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise Unavailable(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        if response.will_close:
            self.close()
        status = response.status
        if 200 <= status < 300:
            self.answer = answer
            return status
        detail = problem_detail(answer)
        if status in _RETRYABLE:
            raise Unavailable(f"{method} {path}: the server answered {status}: {detail}", status)
        raise Rejected(status, detail, f"{method} {path}")

    def send_with_retries(self, method: str, path: str, body: bytes, retries: int) -> int:
        """:meth:`send`, retrying :class:`Unavailable` with backoff (blocking; not for the
        training thread)."""
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 1:
            raise ValueError(f"retries={retries!r} must be an int >= 1")
        for attempt in range(1, retries + 1):
            try:
                return self.send(method, path, body)
            except Unavailable:
                if attempt == retries:
                    raise
                time.sleep(backoff(attempt))
        raise Unavailable(f"{method} {path}: no attempt made")

    def close(self) -> None:
        """Drop the connection (the next send reconnects)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def abort(self) -> None:
        """End the request in flight now, from another thread: its :meth:`send` raises
        :class:`Unavailable` at once instead of waiting out the socket timeout, and so does every
        later one (a stale-connection resend included)."""
        self._aborted = True
        conn = self._conn
        sock = None if conn is None else conn.sock
        if sock is None:
            return
        try:
            # Wakes a blocked recv; closing stays with the thread in send, which owns the socket.
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed or never connected: nothing is in flight
