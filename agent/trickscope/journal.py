"""On-disk journal of requests the server has not acknowledged, and its replay.

Format: one JSON object per line (JSON Lines, UTF-8), appended in the order the requests were
made, never rewritten::

    {"method": "PUT", "path": "/api/v1/runs/<id>", "body": {...RunCreate...}}
    {"method": "POST", "path": "/api/v1/runs/<id>/points", "body": {...PointBatch...}}

``body`` is the exact JSON payload (``trickscope_wire.dumps``). Every request is idempotent (a run
is created with ``PUT``, point batches carry a ``batch_id``), so replaying a journal twice, or one
whose head was already delivered, changes nothing. A journal file is ``<run id>.jsonl`` in
``AgentConfig.journal_dir``; the agent deletes it once everything in it has been delivered.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from trickscope.transport import Connection


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


def replay(
    journal_path: str | os.PathLike[str], url: str, *, timeout: float = 30.0, retries: int = 3
) -> int:
    """Upload a journal to the server at ``url``, in order; backs ``trickscope sync``.

    Args:
        journal_path: A ``<run id>.jsonl`` file written by the agent.
        url: Base URL of the server, e.g. ``http://127.0.0.1:8000``.
        timeout: Socket timeout of each request, in seconds.
        retries: Attempts per request on network errors and 5xx/429 answers.

    Returns:
        The number of requests the server accepted.

    Raises:
        ValueError: the file is not a journal.
        ConnectionError: a request still failed after ``retries`` attempts, or the server
            rejected one (4xx); earlier requests stay delivered, so replaying again is safe.
    """
    connection = Connection(url, timeout=timeout)
    sent = 0
    try:
        for request in read(journal_path):
            connection.send_with_retries(request.method, request.path, request.body, retries)
            sent += 1
    finally:
        connection.close()
    return sent
