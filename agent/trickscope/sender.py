"""The background thread that turns samples into point batches and delivers them.

The training thread only calls :meth:`Sender.submit` (``put_nowait``; a full queue drops the
sample). The sender thread waits on each sample's device copy and groups points per series. It
flushes logged points every ``flush_secs`` and ``watch``'s per-layer statistics and histograms
(bulk: thousands of series) every ``stats_flush_secs``, or everything once enough points are
buffered, and sends requests in order over one keep-alive connection. Unsent requests live in a
bounded in-memory outbox; past ``max_buffer_bytes`` the oldest spill to the run's
:class:`~trickscope.journal.Journal`, which is delivered first once the server answers again, so
the server sees requests in the order they were made.
"""

from __future__ import annotations

import atexit
import ctypes
import logging
import queue
import sys
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from trickscope._incidents import Incidents
from trickscope.config import AgentConfig
from trickscope.journal import Journal, Request
from trickscope.transfer import Parcel
from trickscope.transport import Connection, Rejected, Unavailable, backoff
from trickscope_wire import (
    HistogramColumns,
    PointBatch,
    SeriesColumns,
    dumps,
    encode_f64,
    encode_f64_rows,
    encode_i64,
)

_fast_dumps: Callable[[Any], bytes] | None
try:
    from orjson import dumps as _fast_dumps
except ImportError:  # a declared dependency; without it the stdlib encoder stands in
    _fast_dumps = None

logger = logging.getLogger("trickscope")

DROPPED = "agent/dropped_samples"
FLUSH_POINTS = 50_000
_POINT_BYTES = 96  # estimated memory of one buffered point (three list slots and their floats)
_STOP = object()
_Columns = tuple[list[int], list[float], list[float]]  # steps, values, times


@dataclass(eq=False)
class Sample:
    """Values of one step, stamped on the training thread."""

    step: int
    time: float
    keys: Sequence[str] = ()  # names of ``parcel``'s values, in order
    parcel: Parcel | None = None
    host: list[tuple[str, float]] = field(default_factory=list)  # already-host numbers
    # > 0: ``parcel`` holds one histogram per key, ``lo, hi, nonfinite`` then ``bins`` counts.
    bins: int = 0
    # ``watch``'s per-layer statistics, sent in the rarer bulk batches; ``log``'s values are not.
    bulk: bool = False


class _Rows:
    """Buffered bulk samples of one list of keys, a row of values per sample.

    A due step's statistics (thousands of values) are kept as the host tensor they arrive in and
    only turned into per-series columns when flushed, all at once: the sender thread shares the
    GIL with the training loop, which on a GPU is often bound by its own Python and launches,
    so per value Python work here would slow it.
    """

    __slots__ = ("keys", "steps", "times", "rows")

    def __init__(self, keys: tuple[str, ...]) -> None:
        self.keys = keys
        self.steps: list[int] = []
        self.times: list[float] = []
        self.rows: list[Tensor] = []

    def add(self, step: int, wall: float, values: Tensor) -> None:
        self.steps.append(step)
        self.times.append(wall)
        self.rows.append(values)

    def columns(self) -> Tensor:
        """One row per key, one column per sample: float64, contiguous, on the host."""
        return torch.stack(self.rows).to(torch.float64).T.contiguous()


def _packed_rows(matrix: Tensor) -> list[str]:
    """Each row of a contiguous float64 host matrix as an ``encode_f64`` column, packed from the
    matrix's own bytes (one copy out of the tensor, no Python float per value)."""
    if sys.byteorder != "little":
        return [encode_f64(row.tolist()) for row in matrix]
    if matrix.numel() == 0:
        return [encode_f64([]) for _ in range(matrix.shape[0])]
    raw = ctypes.string_at(matrix.data_ptr(), matrix.numel() * 8)
    return encode_f64_rows(raw, matrix.shape[1] * 8)


def _encode_points(batch: PointBatch) -> bytes:
    """The batch as JSON. orjson (a dependency; the wire package itself is stdlib-only) writes
    it ~5x faster: a batch holds only strings and ints, so its NaN-as-null rule cannot apply."""
    if _fast_dumps is None:
        return dumps(batch)
    return _fast_dumps(batch)


class _Histograms:
    """Buffered histograms of one series, column by column."""

    __slots__ = ("bins", "steps", "lo", "hi", "counts", "nonfinite", "times")

    def __init__(self, bins: int) -> None:
        self.bins = bins
        self.steps: list[int] = []
        self.lo: list[float] = []
        self.hi: list[float] = []
        self.counts: list[float] = []
        self.nonfinite: list[float] = []
        self.times: list[float] = []

    def columns(self, name: str) -> HistogramColumns:
        return HistogramColumns(
            name=name,
            bins=self.bins,
            steps=encode_i64(self.steps),
            lo=encode_f64(self.lo),
            hi=encode_f64(self.hi),
            counts=encode_f64(self.counts),
            nonfinite=encode_f64(self.nonfinite),
            times=encode_f64(self.times),
        )


class Sender:
    """A daemon thread with a bounded queue; see the module docstring."""

    def __init__(
        self, config: AgentConfig, run_id: str, incidents: Incidents, *, rank: int = 0
    ) -> None:
        self._config = config
        self._incidents = incidents
        # Under torch.distributed rank 0 creates the run; another rank's first batches may reach
        # the server before it does, so until one is accepted "no such run" means "not yet".
        self._awaits_run = rank != 0
        self._dropped_key = DROPPED if rank == 0 else f"rank/{rank}/{DROPPED}"
        self._run_id = run_id
        self._points_path = f"/api/v1/runs/{run_id}/points"
        self._queue: queue.Queue[object] = queue.Queue(maxsize=config.queue_size)
        self._connection = Connection(config.url, timeout=config.http_timeout)
        name = f"{run_id}.jsonl" if rank == 0 else f"{run_id}.rank{rank}.jsonl"
        self.journal = Journal(config.journal_dir / name)
        self._series: dict[str, _Columns] = {}  # logged points: flushed every flush_secs
        self._histograms: dict[str, _Histograms] = {}  # bulk too
        # watch's per-layer statistics, as rows: flushed every stats_flush_secs, like histograms
        self._rows: dict[tuple[str, ...], _Rows] = {}
        self._pending_points = 0  # in all three
        # Everything is flushed past this many points: a batch's size, and the memory held in
        # buffered points (at most half of max_buffer_bytes), stay bounded.
        self._flush_points = max(
            1, min(FLUSH_POINTS, config.max_buffer_bytes // (2 * _POINT_BYTES))
        )
        self._last_step = 0
        self._reported_drops = 0
        self._outbox: deque[Request] = deque()
        self.outbox_bytes = 0
        self.peak_buffer_bytes = 0
        self.peak_request_bytes = 0  # the largest single request: the outbox's overshoot bound
        self.delivered = 0
        self._failures = 0
        self._retry_at = 0.0
        self._deadline: float | None = None
        self.journal_path: Path | None = None
        self._thread = threading.Thread(target=self._main, name="trickscope-sender", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    # -- training thread ---------------------------------------------------------------------

    def submit(self, sample: Sample) -> bool:
        """Enqueue without blocking; drops (and counts) the sample when the queue is full."""
        try:
            self._queue.put_nowait(sample)
            return True
        except queue.Full:
            if sample.parcel is not None:
                sample.parcel.release()
            self._incidents.drop("sender queue full")
            return False

    def request(self, request: Request, timeout: float = 5.0) -> None:
        """Enqueue a control request (run, layers, finish), in order with the samples.

        Only setup and shutdown call this, so a short blocking wait is acceptable.
        """
        try:
            self._queue.put(request, timeout=timeout)
        except queue.Full:
            self._incidents.error("request", TimeoutError(f"queue full: {request.path}"))

    def close(self, timeout: float | None = None) -> None:
        """Flush, deliver what the server takes within ``timeout`` seconds, journal the rest."""
        if not self._thread.is_alive():
            return
        timeout = self._config.finish_timeout if timeout is None else timeout
        self._deadline = time.monotonic() + timeout
        try:
            self._queue.put(_STOP, timeout=max(timeout, 0.01))
        except queue.Full:
            # The thread is stuck on the network; it will see the deadline after this request.
            pass
        self._thread.join(max(timeout, 0.0) + 1.0)
        atexit.unregister(self.close)
        if self._thread.is_alive():
            logger.warning("trickscope: sender did not stop within %.1f s", timeout)

    # -- sender thread -----------------------------------------------------------------------

    def _main(self) -> None:
        config = self._config
        next_flush = time.monotonic() + config.flush_secs
        next_bulk = time.monotonic() + config.stats_flush_secs
        while True:
            now = time.monotonic()
            wake = now + 0.5
            if self._series:
                wake = min(wake, next_flush)
            if self._histograms or self._rows:
                wake = min(wake, next_bulk)
            if not config.offline and (self._outbox or self.journal.pending):
                wake = min(wake, max(self._retry_at, now))  # due for (re)delivery
            try:
                item = self._queue.get(timeout=max(0.0, wake - now))
            except queue.Empty:
                item = None
            if item is _STOP:
                break
            try:
                if isinstance(item, Sample):
                    self._add(item)
                elif isinstance(item, Request):
                    self._flush()
                    self._enqueue(item)
                now = time.monotonic()
                if self._pending_points >= self._flush_points or now >= next_bulk:
                    self._flush()
                    next_bulk = now + config.stats_flush_secs
                    next_flush = now + config.flush_secs
                elif now >= next_flush:
                    self._flush(bulk=False)
                    next_flush = now + config.flush_secs
                self._deliver()
            except Exception as exc:  # the sender must outlive any single bad item
                self._incidents.error("sender", exc)
        self._shutdown()

    def _add(self, sample: Sample) -> None:
        self._last_step = sample.step
        if sample.parcel is not None and sample.bins:
            self._add_histograms(sample, sample.parcel.values())
        elif sample.parcel is not None:
            if sample.bulk:
                row = sample.parcel.tensor()
                if row.numel() != len(sample.keys):
                    raise ValueError(f"{row.numel()} values for {len(sample.keys)} keys")
                keys = tuple(sample.keys)
                rows = self._rows.get(keys)
                if rows is None:
                    rows = self._rows[keys] = _Rows(keys)
                rows.add(sample.step, sample.time, row)
                self._pending_points += row.numel()
            else:
                values = sample.parcel.values()
                if len(values) != len(sample.keys):
                    raise ValueError(f"{len(values)} values for {len(sample.keys)} keys")
                for key, value in zip(sample.keys, values, strict=True):
                    self._point(self._series, key, sample.step, value, sample.time)
        for key, value in sample.host:
            self._point(self._series, key, sample.step, value, sample.time)

    def _add_histograms(self, sample: Sample, values: list[float]) -> None:
        width = sample.bins + 3
        if len(values) != width * len(sample.keys):
            raise ValueError(f"{len(values)} values for {len(sample.keys)} histograms")
        for index, key in enumerate(sample.keys):
            row = values[index * width : (index + 1) * width]
            hist = self._histograms.get(key)
            if hist is None or hist.bins != sample.bins:
                if hist is not None:
                    self._flush()
                hist = self._histograms[key] = _Histograms(sample.bins)
            hist.steps.append(sample.step)
            hist.lo.append(row[0])
            hist.hi.append(row[1])
            hist.nonfinite.append(row[2])
            hist.counts.extend(row[3:])
            hist.times.append(sample.time)
            self._pending_points += width

    def _point(
        self, buffer: dict[str, _Columns], key: str, step: int, value: float, wall: float
    ) -> None:
        columns = buffer.get(key)
        if columns is None:
            columns = buffer[key] = ([], [], [])
        columns[0].append(step)
        columns[1].append(value)
        columns[2].append(wall)
        self._pending_points += 1

    def _flush(self, *, bulk: bool = True) -> None:
        """Turn buffered points into one request: logged points, and the bulk ones if ``bulk``."""
        drops = self._incidents.drops
        if drops != self._reported_drops:
            self._reported_drops = drops
            self._point(self._series, self._dropped_key, self._last_step, float(drops), time.time())
        histograms = self._histograms if bulk else {}
        rows = list(self._rows.values()) if bulk else []
        if not self._series and not histograms and not rows:
            return
        series = self._series_columns(rows)
        batch = PointBatch(
            batch_id=uuid.uuid4().hex,
            series=series,
            histograms=[hist.columns(name) for name, hist in histograms.items()],
        )
        self._pending_points -= sum(len(columns[0]) for columns in self._series.values())
        self._series.clear()
        if rows:
            self._pending_points -= sum(len(row.steps) * len(row.keys) for row in rows)
            self._rows.clear()
        if histograms:
            self._pending_points -= sum(
                len(hist.steps) * (hist.bins + 3) for hist in histograms.values()
            )
            histograms.clear()
        self._enqueue(Request("POST", self._points_path, _encode_points(batch)))

    def _series_columns(self, rows: list[_Rows]) -> list[SeriesColumns]:
        """The batch's series: logged points, then ``watch``'s rows, whose steps and times are
        encoded once per group of keys. A series found in more than one place (a gradient that
        came or went between two layouts, a name also logged) is merged into one."""
        seen = Counter(self._series.keys())
        for group in rows:
            seen.update(group.keys)
        merged: dict[str, _Columns] = {}
        series: list[SeriesColumns] = []

        def merge(name: str, steps: list[int], values: Sequence[float], times: list[float]) -> None:
            had = merged.get(name, ([], [], []))
            merged[name] = (had[0] + steps, had[1] + list(values), had[2] + times)

        for name, (steps, values, times) in self._series.items():
            if seen[name] > 1:
                merge(name, steps, values, times)
            else:
                series.append(
                    SeriesColumns(name, encode_i64(steps), encode_f64(values), encode_f64(times))
                )
        for group in rows:
            packed_steps, packed_times = encode_i64(group.steps), encode_f64(group.times)
            matrix = group.columns()
            packed_rows = _packed_rows(matrix)
            for index, (name, packed) in enumerate(zip(group.keys, packed_rows, strict=True)):
                if seen[name] > 1:
                    merge(name, group.steps, matrix[index].tolist(), group.times)
                else:
                    series.append(SeriesColumns(name, packed_steps, packed, packed_times))
        series.extend(
            SeriesColumns(name, encode_i64(steps), encode_f64(values), encode_f64(times))
            for name, (steps, values, times) in merged.items()
        )
        return series

    def _enqueue(self, request: Request) -> None:
        self._outbox.append(request)
        self.outbox_bytes += len(request.body)
        self.peak_request_bytes = max(self.peak_request_bytes, len(request.body))
        buffered = self.outbox_bytes + self._pending_points * _POINT_BYTES
        self.peak_buffer_bytes = max(self.peak_buffer_bytes, buffered)
        if self._config.offline:
            self._spill(0)
        elif buffered > self._config.max_buffer_bytes:
            # Points still buffered count against the cap too (at most half of it, see
            # ``_flush_points``), so that memory stays within cap plus one request.
            pending = self._pending_points * _POINT_BYTES
            self._spill(max(0, self._config.max_buffer_bytes // 2 - pending))

    def _spill(self, keep_bytes: int) -> None:
        """Move the oldest outbox requests to the journal until at most ``keep_bytes`` remain."""
        while self._outbox and self.outbox_bytes > keep_bytes:
            request = self._outbox.popleft()
            self.outbox_bytes -= len(request.body)
            self.journal.append(request)

    def _deliver(self, deadline: float | None = None) -> None:
        """Send journal entries, then outbox requests, until done, backing off, or past
        ``deadline``."""
        if self._config.offline:
            return
        while self.journal.pending or self._outbox:
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
                    self._failures += 1
                    self._retry_at = time.monotonic() + backoff(self._failures)
                    self._incidents.throttled(
                        "awaiting run",
                        "trickscope: rank 0 has not created run %s on %s yet; holding this "
                        "rank's data (%d attempts so far)",
                        self._run_id,
                        self._config.url,
                        self._failures,
                    )
                    return
                # Retrying a request the server refuses would block everything behind it.
                self._incidents.error(f"rejected {exc.status}", exc)
            except Unavailable as exc:
                self._failures += 1
                self._retry_at = time.monotonic() + backoff(self._failures)
                self._incidents.throttled(
                    "network",
                    "trickscope: server %s unreachable (%s); buffering, %d failed attempts so far",
                    self._config.url,
                    exc,
                    self._failures,
                )
                return
            else:
                self._awaits_run = False
            self._failures = 0
            self.delivered += 1
            if from_journal:
                self.journal.advance(size)
            else:
                self._outbox.popleft()
                self.outbox_bytes -= len(request.body)

    def _shutdown(self) -> None:
        try:
            while True:  # samples that arrived before the stop sentinel
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, Sample):
                    self._add(item)
                elif isinstance(item, Request):
                    self._flush()
                    self._enqueue(item)
            self._flush()
            deadline = self._deadline if self._deadline is not None else time.monotonic()
            self._retry_at = 0.0
            while (
                not self._config.offline
                and (self.journal.pending or self._outbox)
                and time.monotonic() < deadline
            ):
                self._deliver(deadline)
                if self._retry_at > deadline:
                    break
                time.sleep(max(0.0, min(self._retry_at, deadline) - time.monotonic()))
            self._spill(0)
            self.journal_path = self.journal.close()
            if self.journal_path is not None:
                logger.warning(
                    "trickscope: %s holds data the server has not received; upload it with "
                    "`trickscope sync %s`",
                    self.journal_path,
                    self.journal_path,
                )
        except Exception as exc:
            self._incidents.error("sender shutdown", exc)
        finally:
            self._connection.close()
