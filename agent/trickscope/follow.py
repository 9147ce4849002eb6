"""The wait for a live follower: while nobody follows the run, the agent sends at its slow
cadence and holds a request that the server answers the moment someone starts following.

``GET /api/v1/runs/<id>/followed?wait=<s>`` is held by the server until a live stream of the run
opens (a dashboard's run page, a client's ``follow``, in any of its workers) or ``wait`` seconds
pass. The sender then hears of a new viewer at once, not at its next slow flush, and sends what
it holds straight away. A glance ends the wait too (the runs list shows the run: ``glanced``):
the sender then sends what it holds once and keeps its slow cadence. The agent asks for a
10-minute wait, and the server holds it as long as its ``follow_wait_seconds`` allows (10
minutes by default), sending a space now and then for the proxies in between and stamping the
run seen whenever nothing else did for a while: the waits are the run's heartbeat while they
last, and one request per wait is all they cost the server. A server from before long waits
refuses them (422): the agent then asks for ``heartbeat_secs`` (at most 50 s), and such a
server stamps the run when each wait starts.

Runs on a thread of its own; it never raises, and a server without the route (an older one)
ends it quietly, leaving the point batches' answers as the only word on following.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable

from trickscope.config import AgentConfig
from trickscope.transport import Connection, Rejected, Unavailable, backoff

logger = logging.getLogger("trickscope")

WAIT_SECONDS = 600.0  # the wait asked for; the server may hold it shorter
# The longest wait a server from before long waits accepts: under its 60 s cap and most proxies'
# idle timeouts (it sends nothing while it holds the wait).
SHORT_WAIT_SECONDS = 50.0
_LOOK_SECONDS = 1.0  # while the run is followed: how often the thread checks whether it still is


class FollowWatch:
    """Waits, on its own thread, for someone to follow the run live.

    Args:
        config: The agent's settings (URL, token, timeouts).
        run_id: The run to watch.
        is_followed: Whether the sender already knows the run is followed (its last answer
            said so): no request is held meanwhile.
        on_followed: Called (from this thread) when the server says someone follows the run.
        on_glanced: Called (from this thread) when the server says someone glanced at the run
            without following it.
    """

    def __init__(
        self,
        config: AgentConfig,
        run_id: str,
        *,
        is_followed: Callable[[], bool],
        on_followed: Callable[[], None],
        on_glanced: Callable[[], None] = lambda: None,
    ) -> None:
        self._run_id = run_id
        self._config = config
        self._connection = Connection(config.url, timeout=config.http_timeout, token=config.token)
        self._is_followed = is_followed
        self._on_followed = on_followed
        self._on_glanced = on_glanced
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="trickscope-follow", daemon=True)
        self._waiting_since: float | None = None  # monotonic start of the wait held now
        self._ask(WAIT_SECONDS)

    def _ask(self, wait: float) -> None:
        """Ask for waits of ``wait`` seconds from now on."""
        config = self._config
        self._wait = wait
        self._path = f"/api/v1/runs/{self._run_id}/followed?wait={wait:g}"
        self._connection.timeout = wait + config.http_timeout
        # A wait held longer than asked (a slow server) no longer says the run is alive.
        self._longest = wait + min(1.0, config.http_timeout)

    @property
    def vouches(self) -> bool:
        """Whether the wait held now tells the server the run is alive (the server stamps its
        ``last_seen_at`` when a wait starts and, a server with long waits, while it holds one):
        no heartbeat is needed meanwhile."""
        since = self._waiting_since
        return since is not None and time.monotonic() - since < self._longest

    def start(self) -> None:
        """Start waiting; later calls do nothing."""
        if self._thread.ident is None and not self._stop.is_set():
            self._thread.start()

    def close(self, timeout: float = 1.0) -> None:
        """Stop: the request held, if any, is cut at once."""
        self._stop.set()
        self._connection.abort()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _main(self) -> None:
        try:
            self._wait_for_followers()
        finally:
            self._waiting_since = None  # no wait held: heartbeats again

    def _wait_for_followers(self) -> None:
        failures = 0
        while not self._stop.is_set():
            if self._is_followed():
                self._waiting_since = None
                self._stop.wait(_LOOK_SECONDS)
                continue
            self._waiting_since = time.monotonic()
            try:
                self._connection.send("GET", self._path, b"")
            except Rejected as exc:
                if exc.status == 422 and self._wait > SHORT_WAIT_SECONDS:
                    # A server from before long waits: ask what it accepts, as often as a
                    # heartbeat, since it stamps the run only when a wait starts.
                    self._ask(min(SHORT_WAIT_SECONDS, self._config.heartbeat_secs))
                    continue
                # No such route (an older server) or run: nothing to wait for; the answers to
                # point batches still set the cadence.
                logger.debug("trickscope: not waiting for live followers: %s", exc)
                return
            except Unavailable:
                self._waiting_since = None
                if self._stop.is_set():
                    return
                failures += 1
                self._stop.wait(backoff(failures, base=1.0, cap=30.0))
                continue
            except Exception as exc:  # a thread of the agent must never die loudly
                logger.debug("trickscope: waiting for live followers failed: %s", exc)
                return
            failures = 0
            said = _said(self._connection.answer)
            if self._stop.is_set():
                break
            if said.get("followed") is True:
                self._on_followed()
            elif said.get("glanced") is True:
                self._on_glanced()
        self._connection.close()


def _said(answer: bytes) -> dict[str, object]:
    """The wait's answer, or nothing if it is not a JSON object."""
    try:
        said = json.loads(answer)
    except ValueError:
        return {}
    return said if isinstance(said, dict) else {}
