"""On-disk journal of requests the server has not acknowledged, and its replay.

Format: one JSON object per line (JSON Lines, UTF-8), appended in the order the requests were
made, never rewritten::

    {"method": "PUT", "path": "/api/v1/runs/<id>", "body": {...RunCreate...}}
    {"method": "POST", "path": "/api/v1/runs/<id>/points", "body": {...PointBatch...}}

``body`` is the exact JSON payload (``trickscope_wire.dumps``). Every request is idempotent (a run
is created with ``PUT``, point batches carry a ``batch_id``), so replaying a journal twice, or one
whose head was already delivered, changes nothing. A journal file is ``<run id>.jsonl`` in
``AgentConfig.journal_dir``; the agent deletes it once everything in it has been delivered.

A request the server refuses (4xx), or keeps failing with a 500, is set aside in the run's
dead-letter file ``<run id>.dead.jsonl``, in the same format, so that it can neither block the
requests behind it nor be lost: ``trickscope sync <file>`` replays it once the cause is fixed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from trickscope.transport import Connection, Rejected, Unavailable

DEAD_SUFFIX = ".dead.jsonl"
POISON_STATUSES = frozenset({500})
"""Answers that, repeated for one request, mean the request (not the server) is at fault. A 502,
503 or 504 comes from a proxy or an overloaded server: an outage, waited out instead."""


def dead_letter_path(journal_path: Path) -> Path:
    """Where the requests of ``<run>.jsonl`` (or of a dead-letter file itself) are set aside."""
    name = journal_path.name
    if name.endswith(DEAD_SUFFIX):
        return journal_path
    stem = name[: -len(".jsonl")] if name.endswith(".jsonl") else name
    return journal_path.with_name(stem + DEAD_SUFFIX)


@dataclass(frozen=True)
class Request:
    """One HTTP request to the server, body already serialised."""

    method: str
    path: str
    body: bytes


def _line(request: Request) -> tuple[bytes, bytes, bytes]:
    """One request as a JSON line, in three pieces written in turn: the body is already JSON,
    so it is spliced in, neither parsed and re-encoded nor copied into one string."""
    head = json.dumps({"method": request.method, "path": request.path})
    return head[:-1].encode() + b', "body": ', request.body, b"}\n"


def read(path: str | os.PathLike[str]) -> Iterator[Request]:
    """Requests of a journal file, in order.

    Raises:
        ValueError: a line is not a journal entry; the message gives the line number.
    """
    with open(path, "rb") as file:
        for number, raw in enumerate(file, start=1):
            if not raw.strip():
                continue
            try:
                entry = json.loads(raw)
                yield Request(entry["method"], entry["path"], _body(entry["body"]))
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{number} is not a journal entry: {exc}") from None


def _body(body: object) -> bytes:
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()


class Journal:
    """Append-only spill file of one run, with a read cursor for live catch-up."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer: BinaryIO | None = None
        self._written = 0  # bytes appended
        self._cursor = 0  # bytes already delivered

    @property
    def pending(self) -> bool:
        """Whether entries remain that were not delivered."""
        return self._cursor < self._written

    @property
    def pending_bytes(self) -> int:
        """Size of the undelivered tail."""
        return self._written - self._cursor

    def append(self, request: Request) -> None:
        """Write one request at the end of the file (flushed to the OS, not fsynced)."""
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = open(self.path, "ab")
            self._written = self._cursor = self._writer.tell()
        pieces = _line(request)
        self._writer.writelines(pieces)
        self._writer.flush()
        self._written += sum(len(piece) for piece in pieces)

    def peek(self) -> tuple[Request, int]:
        """The oldest undelivered request and its size in the file."""
        with open(self.path, "rb") as file:
            file.seek(self._cursor)
            raw = file.readline()
        entry = json.loads(raw)
        return Request(entry["method"], entry["path"], _body(entry["body"])), len(raw)

    def advance(self, size: int) -> None:
        """Mark the entry returned by :meth:`peek` as delivered."""
        self._cursor += size

    def close(self) -> Path | None:
        """Close the file; delete it when all was delivered. Returns the path if it remains."""
        if self._writer is None:
            return None
        self._writer.close()
        self._writer = None
        if not self.pending:
            self.path.unlink(missing_ok=True)
            return None
        return self.path


@dataclass
class Upload:
    """What :func:`upload` did with one file."""

    sent: int = 0
    set_aside: int = 0
    first_refusal: str | None = None  # the server's answer to the first request set aside


def upload(
    journal_path: Path,
    connection: Connection,
    *,
    set_aside: Journal,
    retries: int = 3,
) -> Upload:
    """Send a journal's requests in order; those the server refuses, or fails with a 500
    ``retries`` times, go to ``set_aside`` and the rest still goes.

    Raises:
        ValueError: the file is not a journal.
        Unavailable: the server did not answer (or answered 502/503/504/429) after ``retries``
            attempts; earlier requests stay delivered, so uploading again is safe.
    """
    return upload_requests(read(journal_path), connection, set_aside=set_aside, retries=retries)


def upload_requests(
    requests: Iterable[Request],
    connection: Connection,
    *,
    set_aside: Journal,
    retries: int = 3,
) -> Upload:
    """:func:`upload` of requests from anywhere (a dead process's hold file: see
    :mod:`trickscope.held`)."""
    result = Upload()
    for request in requests:
        try:
            connection.send_with_retries(request.method, request.path, request.body, retries)
            result.sent += 1
        except (Rejected, Unavailable) as exc:
            if isinstance(exc, Unavailable) and exc.status not in POISON_STATUSES:
                raise
            set_aside.append(request)
            result.set_aside += 1
            if result.first_refusal is None:
                result.first_refusal = str(exc)  # names the request and the answer
    return result


def replay(
    journal_path: str | os.PathLike[str],
    url: str,
    *,
    timeout: float = 30.0,
    retries: int = 3,
    token: str | None = None,
) -> int:
    """Upload a journal to the server at ``url``, in order; backs ``trickscope sync``.

    Args:
        journal_path: A ``<run id>.jsonl`` file written by the agent.
        url: Base URL of the server, e.g. ``http://127.0.0.1:8000``.
        timeout: Socket timeout of each request, in seconds.
        retries: Attempts per request on network errors and 5xx/429 answers.
        token: Sent as ``Authorization: Bearer <token>`` (a server with tokens needs one).

    Returns:
        The number of requests the server accepted.

    Raises:
        ValueError: the file is not a journal.
        ConnectionError: a request still failed after ``retries`` attempts, or the server
            rejected one (4xx); earlier requests stay delivered, so replaying again is safe.
    """
    connection = Connection(url, timeout=timeout, token=token)
    sent = 0
    try:
        for request in read(journal_path):
            connection.send_with_retries(request.method, request.path, request.body, retries)
            sent += 1
    finally:
        connection.close()
    return sent
