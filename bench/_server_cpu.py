"""The server's CPU time, as the end-to-end benchmarks measure it: a ``trickscope serve``
process' POSIX CPU clock, its idle rate, and the share of each kind of request the agent sends
(counted in the benchmark's own process, at ``http.client``)."""

from __future__ import annotations

import http.client
import threading
import time
from typing import Any

import orjson


def process_cpu_seconds(pid: int) -> float:
    """CPU time of process ``pid`` so far, all its threads, exited ones included.

    Linux's per-process CPU clock (``clock_getcpuclockid``: ``~pid << 3 | CPUCLOCK_SCHED``) has
    nanosecond resolution; ``/proc/<pid>/stat`` counts in 10 ms ticks, as much as a whole run
    of the server's work here.
    """
    clock = (~pid << 3) | 2
    return time.clock_gettime(clock)


class RequestCounter:
    """Counts the HTTP requests this process sends to the server, by ``http.client``.

    The agent's sender talks to the server through ``http.client`` only; wrapping its
    ``request`` counts every request it makes (retries included) without touching the server.
    Each kind (method and path, the run id left out) also gets the server's CPU time from the
    request's sending to its response's headers: the handler's share, not the work it leaves
    for after the answer (compaction), which only the run's total holds.
    """

    def __init__(self) -> None:
        self.port = 0
        self.pid = 0
        self.idle = 0.0  # the server's idle CPU rate
        self.requests = 0
        self.by_kind: dict[str, list[float]] = {}  # kind -> [count, server CPU seconds]
        self.first_blocks: Any = None  # the body of the run's first per-layer statistics batch
        self._lock = threading.Lock()
        self._request = http.client.HTTPConnection.request
        self._getresponse = http.client.HTTPConnection.getresponse

    def __enter__(self) -> RequestCounter:
        counter, request, getresponse = self, self._request, self._getresponse

        def counted_request(
            conn: http.client.HTTPConnection, method: str, url: str, *a: Any, **k: Any
        ) -> None:
            if conn.port == counter.port:
                body = k.get("body", a[0] if a else None)
                kind = request_kind(method, url, body)
                if "blocks" in kind and counter.first_blocks is None:
                    counter.first_blocks = body
                if body is not None and body is counter.first_blocks:
                    kind += FIRST_BLOCKS  # a resend on a new connection is the same body
                sent = (kind, process_cpu_seconds(counter.pid), time.monotonic())
                conn._bench_sent = sent  # type: ignore[attr-defined]
                with counter._lock:
                    counter.requests += 1
            request(conn, method, url, *a, **k)

        def timed_getresponse(conn: http.client.HTTPConnection) -> http.client.HTTPResponse:
            response = getresponse(conn)
            sent = conn.__dict__.pop("_bench_sent", None)
            if sent is not None:
                kind, cpu, wall = sent
                spent = process_cpu_seconds(counter.pid) - cpu
                spent -= counter.idle * (time.monotonic() - wall)
                with counter._lock:
                    entry = counter.by_kind.setdefault(kind, [0, 0.0])
                    entry[0] += 1
                    entry[1] += spent
            return response

        http.client.HTTPConnection.request = counted_request  # type: ignore[method-assign]
        http.client.HTTPConnection.getresponse = timed_getresponse  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        http.client.HTTPConnection.request = self._request  # type: ignore[method-assign]
        http.client.HTTPConnection.getresponse = self._getresponse  # type: ignore[method-assign]

    def reset(self, url: str, pid: int, idle: float) -> None:
        """Count afresh the requests to the server at ``url`` (process ``pid``, idle CPU rate
        ``idle``)."""
        with self._lock:
            self.port = int(url.rsplit(":", 1)[1])
            self.pid, self.idle = pid, idle
            self.requests, self.by_kind = 0, {}
            self.first_blocks = None


def request_kind(method: str, url: str, body: Any) -> str:
    """Method and path without the run id; a batch also says what it carries."""
    path = "/".join("{id}" if len(part) == 32 else part for part in url.split("/"))
    kind = f"{method} {path}"
    if isinstance(body, bytes) and path.endswith("/points"):
        batch = orjson.loads(body)  # never compressed: the server is on this machine
        carries = [name for name in ("blocks", "histograms") if batch.get(name)]
        if batch.get("histogram_blocks") and "histograms" not in carries:
            carries.append("histograms")  # the same histograms, in the block form
        kind += f" ({' + '.join(['series', *carries])})"
    return kind


def idle_rate(pid: int, seconds: float) -> float:
    """The server's CPU seconds per wall second while nobody talks to it."""
    began, spent = time.monotonic(), process_cpu_seconds(pid)
    time.sleep(seconds)
    return (process_cpu_seconds(pid) - spent) / (time.monotonic() - began)


def wait_quiet(pid: int, idle: float, window: float = 0.25, timeout: float = 20.0) -> None:
    """Return once a ``window`` of the server's CPU is no more than idle (plus 1 ms)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        spent = process_cpu_seconds(pid)
        time.sleep(window)
        if process_cpu_seconds(pid) - spent <= idle * window + 1e-3:
            return
    raise RuntimeError(f"the server stayed busy {timeout:.0f} s after the run finished")


# A run's own requests, once per run whatever its length.
RUN_REQUESTS = ("PUT /api/v1/runs/{id}", "PUT /api/v1/runs/{id}/layers",
                "PUT /api/v1/runs/{id}/setup", "POST /api/v1/runs/{id}/finish")  # fmt: skip


# Marks the run's first batch of per-layer statistics, which also creates their series.
FIRST_BLOCKS = " [first: creates the per-layer series]"


def run_requests_cpu(by_kind: dict[str, list[float]], *, first_blocks: bool = False) -> float:
    """Server CPU seconds a run spent in its own requests (:data:`RUN_REQUESTS`), from a
    :class:`RequestCounter`'s ``by_kind``; with ``first_blocks``, its first batch of per-layer
    statistics too, which creates their series (once per run as well)."""
    once = [kind for kind in by_kind if first_blocks and kind.endswith(FIRST_BLOCKS)]
    return sum(by_kind.get(kind, [0, 0.0])[1] for kind in (*RUN_REQUESTS, *once))
