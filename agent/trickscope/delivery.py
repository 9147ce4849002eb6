"""Delivery of a run's requests, in order, to a server that may be slow, down or refusing.

Requests wait in a bounded in-memory outbox. Past ``max_buffer_bytes`` (counting the memory
the caller still holds in points not yet made into requests) the oldest spill to the run's
:class:`~trickscope.journal.Journal`, which is delivered first once the server answers again.
A request the server refuses (4xx), or fails with a 500 ``dead_letter_after`` times, is set
aside in the run's dead-letter file and the rest goes on; any other failure (no answer, 429,
502, 503, 504) is waited out with capped, jittered exponential back-off. When nothing else was
sent for ``heartbeat_secs``, a heartbeat tells the server the run is alive.

Everything here runs on the sender thread; nothing blocks the training thread.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path

from trickscope._incidents import Incidents
from trickscope.config import AgentConfig
from trickscope.journal import POISON_STATUSES, Journal, Request, dead_letter_path
from trickscope.transport import Connection, Rejected, Unavailable, backoff

logger = logging.getLogger("trickscope")

_HEARTBEAT_BODY = b"{}"
_POINTS = "/points"


def followed(answer: bytes) -> bool:
    """Whether a point batch's answer says someone follows the run live; True when it does not
    say (a server older than the field), which keeps the fast cadence."""
    try:
        said = json.loads(answer).get("followed", True)
    except (ValueError, AttributeError):
        return True
    return said if isinstance(said, bool) else True


class Delivery:
    """The outbox of one run (or one rank's part of it) and the connection that empties it.

    Args:
        config: The agent's settings.
        run_id: The run the requests belong to.
        incidents: Where failures are counted and logged at a limited rate.
        journal_stem: Name of the run's journal, ``<stem>.jsonl`` in ``journal_dir``.
        awaits_run: Another process creates the run (a rank other than 0): until the server
            accepts one request, "no such run" (404) means "not yet" and is waited out.
        first: Requests to send before anything else, in order: the run's creation.
    """

    def __init__(
        self,
        config: AgentConfig,
        run_id: str,
        incidents: Incidents,
        *,
        journal_stem: str,
        awaits_run: bool = False,
        first: Sequence[Request] = (),
    ) -> None:
        self._config = config
        self._run_id = run_id
        self._incidents = incidents
        self._awaits_run = awaits_run
        self._heartbeat_path = f"/api/v1/runs/{run_id}/heartbeat"
        self._connection = Connection(
            config.url, timeout=config.http_timeout, token=config.token, compress=config.compress
        )
        self.journal = Journal(config.journal_dir / f"{journal_stem}.jsonl")
        self.dead = Journal(dead_letter_path(self.journal.path))
        self._outbox: deque[Request] = deque(first)
        self.outbox_bytes = sum(len(request.body) for request in first)
        self.peak_buffer_bytes = self.outbox_bytes
        self.peak_request_bytes = max((len(request.body) for request in first), default=0)
        self.delivered = 0
        self.dead_lettered = 0
        self.heartbeats_sent = 0
        self.heartbeats = 0  # those the server accepted
        self.failures = 0  # consecutive failed attempts at the head request
        self._poison_failures = 0  # consecutive 500s of the request at the head
        self._retry_at = 0.0
        self._accepted_any = False  # the server took a request of this run: it exists
        # Whether someone follows the run live, as the last point batch's answer said; True
        # until one says otherwise (and always from a server that does not say).
        self.followed = True
        self._last_contact = time.monotonic()

    @property
    def backlog(self) -> bool:
        """Whether requests wait, in memory or in the journal."""
        return bool(self._outbox) or self.journal.pending

    @property
    def unsent_in_memory(self) -> bool:
        """Whether requests wait in memory (not delivered, and not in the journal either)."""
        return bool(self._outbox)

    def due(self, now: float, *, heartbeats: bool = True) -> float | None:
        """The monotonic time the sender thread should next wake for delivery or, if
        ``heartbeats``, a heartbeat; ``None`` when delivery needs no wake-up (offline, or nothing
        to send and no run yet or no heartbeat wanted: a held wait for a follower vouches for
        the run, and a heartbeat time long past would wake the thread at once, again and again).
        """
        if self._config.offline:
            return None
        if self.backlog:
            return max(self._retry_at, now)
        if self._accepted_any and heartbeats:
            return self._last_contact + self._config.heartbeat_secs
        return None

    def put(self, request: Request, *, held_bytes: int = 0) -> None:
        """Queue ``request`` behind the others; spill the oldest to the journal when the outbox
        and ``held_bytes`` (the caller's points not yet made into requests) pass
        ``max_buffer_bytes``, or always when offline."""
        self._outbox.append(request)
        self.outbox_bytes += len(request.body)
        self.peak_request_bytes = max(self.peak_request_bytes, len(request.body))
        buffered = self.outbox_bytes + held_bytes
        self.peak_buffer_bytes = max(self.peak_buffer_bytes, buffered)
        if self._config.offline:
            self.spill(0)
        elif buffered > self._config.max_buffer_bytes:
            # Held points count against the cap too (the caller keeps them under half of it),
            # so that memory stays within cap plus one request.
            self.spill(max(0, self._config.max_buffer_bytes // 2 - held_bytes))

    def spill(self, keep_bytes: int) -> None:
        """Move the oldest outbox requests to the journal until at most ``keep_bytes`` remain."""
        while self._outbox and self.outbox_bytes > keep_bytes:
            request = self._outbox.popleft()
            self.outbox_bytes -= len(request.body)
            self.journal.append(request)

    def deliver(self, deadline: float | None = None) -> None:
        """Send journal entries, then outbox requests, until done, backing off, or past
        ``deadline``."""
        if self._config.offline:
            return
        while self.backlog:
            now = time.monotonic()
            if now < self._retry_at or (deadline is not None and now >= deadline):
                return
            from_journal = self.journal.pending
            if from_journal:
                request, size = self.journal.peek()
            else:
                request, size = self._outbox[0], 0
            timeout = None if deadline is None else deadline - now
            try:
                self._connection.send(request.method, request.path, request.body, timeout=timeout)
            except Rejected as exc:
                if self._awaits_run and exc.status == 404:  # rank 0 has not created it yet
                    self._back_off(
                        "awaiting run",
                        "trickscope: rank 0 has not created run %s on %s yet; holding this "
                        "rank's data (%d attempts so far)",
                        self._run_id,
                        self._config.url,
                        self.failures + 1,
                    )
                    return
                # Retrying a request the server refuses would block everything behind it.
                self._set_aside(request, from_journal, size, exc)
                continue
            except Unavailable as exc:
                if exc.status in POISON_STATUSES:
                    self._poison_failures += 1
                    if self._poison_failures >= self._config.dead_letter_after:
                        self._set_aside(request, from_journal, size, exc)
                        continue
                else:
                    self._poison_failures = 0
                self._back_off(
                    "network",
                    "trickscope: server %s did not take a request (%s); buffering, %d failed "
                    "attempts so far",
                    self._config.url,
                    exc,
                    self.failures + 1,
                )
                return
            if request.path.endswith(_POINTS):
                self.followed = followed(self._connection.answer)
            self._awaits_run = False
            self._accepted_any = True
            self._last_contact = time.monotonic()
            self.delivered += 1
            self._advance(from_journal, size)

    def heartbeat(self) -> None:
        """Tell the server the run is alive when nothing else was sent for ``heartbeat_secs``
        (never journaled; any answer, even none, is fine)."""
        if self._config.offline or not self._accepted_any or self.backlog:
            return
        now = time.monotonic()
        if now - self._last_contact < self._config.heartbeat_secs:
            return
        self._last_contact = now
        self.heartbeats_sent += 1
        try:
            self._connection.send(
                "POST", self._heartbeat_path, _HEARTBEAT_BODY, timeout=self._config.http_timeout
            )
        except (Rejected, Unavailable):
            return
        self.heartbeats += 1

    def finish(self, deadline: float) -> tuple[Path | None, Path | None]:
        """Deliver what the server takes before ``deadline``, journal the rest, close both files.

        Returns:
            The journal's path if undelivered requests remain in it, and the dead-letter file's
            if any request was set aside.
        """
        if not self._config.offline and self.backlog and self.failures:
            logger.warning(
                "trickscope: the server at %s is not answering; waiting up to %.0f s "
                "(finish_timeout) before leaving the rest in %s",
                self._config.url,
                max(0.0, deadline - time.monotonic()),
                self.journal.path,
            )
        self._retry_at = 0.0
        while not self._config.offline and self.backlog and time.monotonic() < deadline:
            self.deliver(deadline)
            if self._retry_at > deadline:
                break
            time.sleep(max(0.0, min(self._retry_at, deadline) - time.monotonic()))
        self.spill(0)
        journal_path = self.journal.close()
        dead_path = self.dead.close()
        if journal_path is not None:
            logger.warning(
                "trickscope: %s holds data the server has not received; upload it with "
                "`trickscope sync %s`",
                journal_path,
                journal_path,
            )
        return journal_path, dead_path

    def close(self) -> None:
        """Drop the connection."""
        self._connection.close()

    def abort_request(self) -> None:
        """Cut the request in flight, if any (thread-safe): it fails as in an outage, so it stays
        queued and ends in the journal."""
        self._connection.abort()

    def _back_off(self, kind: str, message: str, *args: object) -> None:
        self.failures += 1
        self._retry_at = time.monotonic() + backoff(self.failures)
        self._incidents.throttled(kind, message, *args)

    def _advance(self, from_journal: bool, size: int) -> None:
        """The head request is done with (delivered or set aside): go on to the next."""
        self.failures = 0
        self._poison_failures = 0
        if from_journal:
            self.journal.advance(size)
        else:
            request = self._outbox.popleft()
            self.outbox_bytes -= len(request.body)

    def _set_aside(
        self, request: Request, from_journal: bool, size: int, exc: ConnectionError
    ) -> None:
        """Write a request the server will not take to the dead-letter file, and go on."""
        self.dead.append(request)
        self.dead_lettered += 1
        self._advance(from_journal, size)
        self._retry_at = 0.0
        if self.dead_lettered == 1:
            logger.warning(
                "trickscope: a request was refused (%s); it is set aside in %s and the run's "
                "other data goes on. Once the cause is fixed, replay it with `trickscope sync %s`",
                exc,
                self.dead.path,
                self.dead.path,
            )
