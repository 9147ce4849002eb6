"""The background thread that turns logged values into point batches and delivers them.

The training thread never waits here. Logged scalars (``run.log``'s numbers, the tricks'
reports, the learning rate) are appended to a :class:`~trickscope.scalars.ScalarBuffer`, packed
columns that spill to disk past their memory bound: none is ever dropped. Device values (a
logged loss, ``watch``'s statistics and histograms) arrive as :class:`Sample` objects on an
inbox deque; only ``watch``'s per-layer statistics and histograms, optional and thousands per
step, are thinned when more than ``queue_size`` of them wait, and counted as
``agent/thinned_samples``.

The sender thread waits on each sample's device copy, flushes logged points every
``flush_secs`` and the per-layer statistics every ``stats_flush_secs`` (or sooner once enough
points wait); while the server says nobody follows the run live, both every
``unfollowed_flush_secs``, with a copy on disk of what it holds every ``flush_secs``
(:mod:`trickscope.held`). It hands the requests, in order, to its
:class:`~trickscope.delivery.Delivery` (outbox, journal spill, back-off, dead letters,
heartbeats). The run's creation is the first request of all:
nothing can reach the server before its run.
"""

from __future__ import annotations

import atexit
import io
import logging
import sys
import threading
import time
import uuid
from array import array
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trickscope._incidents import Incidents
from trickscope._sanitize import MAX_SERIES_CHARS, clean_text
from trickscope.batches import (
    HistogramBuffer,
    StatRows,
    encode_points,
    histogram_payloads,
    joined_series,
    packed_rows,
    point_batch,
)
from trickscope.config import AgentConfig
from trickscope.delivery import Delivery
from trickscope.follow import FollowWatch
from trickscope.held import HoldFiles
from trickscope.journal import Journal, Request
from trickscope.logged import LoggedBatcher
from trickscope.scalars import (
    POINT_BYTES,
    Layout,
    RowBlock,
    ScalarBuffer,
    Taken,
    read_overflow,
)
from trickscope.transfer import Parcel
from trickscope_wire import (
    HistogramBlock,
    HistogramColumns,
    SeriesColumns,
    encode_f64,
    encode_i64,
)

_fast_dumps: Callable[[Any], bytes] | None
try:
    from orjson import dumps as _fast_dumps
except ImportError:  # a declared dependency; without it the stdlib encoder stands in
    _fast_dumps = None

logger = logging.getLogger("trickscope")

THINNED = "agent/thinned_samples"
# Most points of watch's statistics in one request, before stats_flush_secs: a wide model at a
# high step rate reaches it first. As for logged points (below), the server's cost per request
# is what larger requests save: a 1,650-series MLP's 50,000-point requests spent a third of the
# server's CPU on the request itself (~4 ms each), not on its points.
FLUSH_POINTS = 200_000
# Logged points waiting that wake the sender before its flush_secs, and the most points in one
# request of them: the server's cost is mostly per series and per request, so a tight loop's
# points go in large slices (6 MB of columns; log_buffer_bytes bounds what waits) and requests
# (~6.5 MB of JSON; at 50,000 points the server spent ~20 % more CPU per point).
LOG_WAKE_POINTS = 250_000
LOG_BATCH_POINTS = 200_000
# Logged points that ride with watch's statistics even when those fill a request: at a GPU's
# pace they reach FLUSH_POINTS every ~15 s, long before the flush interval, and the few logged
# points of those seconds then cost a request of their own, ~6.6 ms of the server's CPU each (a
# fifth of its cost per ViT-tiny step). The server takes 5,000,000 points per request.
RIDE_ALONG_POINTS = 50_000
_POINT_BYTES = 96  # estimated memory of one buffered bulk point (list slots and floats)
_STOP = object()
_LITTLE = sys.byteorder == "little"
# Seconds ``close`` lets the final take of the logged points wait for the training thread's
# lock: a signal handler finishing the run may have interrupted that thread holding it.
_FINAL_TAKE_WAIT = 1.0
# Seconds between looks at whether ``close`` was called while waiting for that lock.
_LOCK_SLICE = 0.1


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
    # ``watch``'s per-layer statistics, sent in the rarer bulk batches and thinned under
    # overload; ``log``'s values are neither.
    bulk: bool = False
    # ``log``'s values of a wide dict: ``keys`` are this layout's names, kept as one row.
    layout: Layout | None = None


@dataclass(frozen=True)
class _AfterPoints:
    """A control request that must reach the server after everything logged before it."""

    request: Request


@dataclass
class _Riding:
    """``watch``'s part of a flush, encoded: sent with the flush's first logged batch."""

    series: list[SeriesColumns]
    histograms: list[HistogramColumns]
    histogram_blocks: list[HistogramBlock]
    points: int


class Sender:
    """The daemon thread and its inbox; see the module docstring.

    Args:
        config: The agent's settings.
        run_id: The run the data belongs to.
        incidents: Where failures and thinned samples are counted.
        rank: This process's rank (0 outside ``torch.distributed``).
        first: Requests sent before anything else, in order: the run's creation. Queued
            before the thread starts, so no point batch can overtake them.
    """

    def __init__(
        self,
        config: AgentConfig,
        run_id: str,
        incidents: Incidents,
        *,
        rank: int = 0,
        first: Sequence[Request] = (),
    ) -> None:
        self._config = config
        self._incidents = incidents
        self._thinned_key = THINNED if rank == 0 else f"rank/{rank}/{THINNED}"
        self._points_path = f"/api/v1/runs/{run_id}/points"
        self._inbox: deque[object] = deque()
        self._wake = threading.Event()
        # Bulk samples handed over and taken: each counter has one writer, so no lock.
        self._bulk_in = 0
        self._bulk_out = 0
        stem = run_id if rank == 0 else f"{run_id}.rank{rank}"
        # Under torch.distributed rank 0 creates the run; another rank's first batches may reach
        # the server before it does, so until one is accepted "no such run" means "not yet".
        self.delivery = Delivery(
            config, run_id, incidents, journal_stem=stem, awaits_run=rank != 0, first=first
        )
        # Rank 0 alone waits for a live follower (one held request per run, not per rank); the
        # wait starts once an answer says nobody follows the run (a server that knows of it).
        self.follow_watch: FollowWatch | None = None
        self._follower_came = False  # set by the follow watch: flush at once, then go fast
        self._glance_came = False  # set by the follow watch: flush at once, stay slow
        if rank == 0 and not config.offline:
            self.follow_watch = FollowWatch(
                config,
                run_id,
                is_followed=lambda: self.delivery.followed,
                on_followed=self._followed,
                on_glanced=self._glanced,
            )
        # Woken at half the logged points' memory at most, so that a tight loop is sent, not
        # spilled, while the sender keeps up.
        self._log_wake = max(1, min(LOG_WAKE_POINTS, config.log_buffer_bytes // POINT_BYTES // 2))
        self.scalars = ScalarBuffer(
            max_bytes=config.log_buffer_bytes,
            overflow_dir=config.journal_dir,
            stem=stem,
            flush_points=self._log_wake,
            on_full=self._wake.set,
        )
        self._clean_names: dict[str, str] = {}
        self._histograms: dict[str, HistogramBuffer] = {}
        # watch's per-layer statistics, as rows: flushed every stats_flush_secs, like histograms
        self._rows: dict[tuple[str, ...], StatRows] = {}
        self._pending_points = 0  # in both
        # When the oldest of watch's statistics and histograms held arrived (None: none held).
        self._bulk_since: float | None = None
        # A copy on disk of what is held while nobody follows the run (see trickscope.held).
        self._hold = HoldFiles(config.journal_dir, stem)
        # watch's flushed statistics and histograms, encoded, waiting for the flush's first
        # batch of logged points to go in one request with it (see ``_flush``)
        self._riding: _Riding | None = None
        # Everything is flushed past this many points: a batch's size, and the memory held in
        # buffered points (at most half of max_buffer_bytes), stay bounded.
        self._flush_points = max(
            1, min(FLUSH_POINTS, config.max_buffer_bytes // (2 * _POINT_BYTES))
        )
        self._last_step = 0
        self._reported_thinned = 0
        self._deadline: float | None = None
        self.journal_path: Path | None = None
        self.dead_letter_path: Path | None = None
        self._thread = threading.Thread(target=self._main, name="trickscope-sender", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    # -- what delivery did, for callers and tests --------------------------------------------

    @property
    def journal(self) -> Journal:
        """The run's journal: requests spilled, or not delivered by ``close``."""
        return self.delivery.journal

    @property
    def dead(self) -> Journal:
        """The run's dead-letter file: requests the server would not take."""
        return self.delivery.dead

    @property
    def delivered(self) -> int:
        """Requests the server accepted."""
        return self.delivery.delivered

    @property
    def dead_lettered(self) -> int:
        """Requests set aside in the dead-letter file."""
        return self.delivery.dead_lettered

    @property
    def heartbeats_sent(self) -> int:
        """Heartbeats sent, answered or not."""
        return self.delivery.heartbeats_sent

    @property
    def heartbeats(self) -> int:
        """Heartbeats the server accepted."""
        return self.delivery.heartbeats

    @property
    def peak_buffer_bytes(self) -> int:
        """Most bytes held at once in the outbox and in buffered points."""
        return self.delivery.peak_buffer_bytes

    @property
    def peak_request_bytes(self) -> int:
        """Largest request body queued."""
        return self.delivery.peak_request_bytes

    # -- training thread ---------------------------------------------------------------------

    def submit(self, sample: Sample) -> bool:
        """Hand a sample over without blocking. Only ``watch``'s per-layer statistics and
        histograms are ever refused (thinned, and counted), when ``queue_size`` of them wait;
        their host values (the learning rate) are kept all the same."""
        if sample.bulk or sample.bins:
            if self._bulk_in - self._bulk_out >= self._config.queue_size:
                if sample.parcel is not None:
                    sample.parcel.release()
                if sample.host:
                    self.log_points(sample.step, sample.time, sample.host)
                self._incidents.thin("the sender thread is behind")
                return False
            self._bulk_in += 1
        self._inbox.append(sample)
        return True

    def log_points(self, step: int, wall: float, items: Iterable[tuple[str, float]]) -> None:
        """Record host numbers of one step (never dropped; see :class:`ScalarBuffer`)."""
        self.scalars.add(step, wall, items)

    def request(
        self, request: Request, timeout: float = 5.0, *, after_points: bool = False
    ) -> None:
        """Queue a control request (layers, setup, findings, finish). It goes ahead of the points
        held for the next flush (a mid-run setup or finding costs the server no extra point
        request), or, with ``after_points`` (the run's ``finish``), after all logged before it.

        Never blocks (``timeout`` is kept for callers written when it could).
        """
        del timeout
        self._inbox.append(_AfterPoints(request) if after_points else request)
        self._wake.set()

    def close(self, timeout: float | None = None) -> None:
        """Flush, deliver what the server takes within ``timeout`` seconds, journal the rest."""
        if not self._thread.is_alive():
            return
        timeout = self._config.finish_timeout if timeout is None else timeout
        self._deadline = time.monotonic() + timeout
        self._inbox.append(_STOP)
        self._wake.set()
        self._thread.join(max(timeout, 0.0) + _FINAL_TAKE_WAIT)
        if self._thread.is_alive():
            # Past the deadline the thread may be waiting on a server that took a request but
            # does not answer (up to http_timeout; a SIGTERM's grace is short): cut the request,
            # which then goes to the journal, and give the thread time to journal what is left.
            self.delivery.abort_request()
            self._thread.join(self._config.http_timeout)
        atexit.unregister(self.close)
        if self._thread.is_alive():
            logger.warning("trickscope: sender did not stop within %.1f s", timeout)

    # -- sender thread -----------------------------------------------------------------------

    def _main(self) -> None:
        config = self._config
        last_flush = last_keep = time.monotonic()
        while True:
            now = time.monotonic()
            # From the last flush, at the cadence the server's last answer called for: a
            # stream that starts following the run brings the next flush forward.
            interval = self.flush_interval()
            next_flush = last_flush + interval
            # Held longer than flush_secs (nobody follows the run): copied to disk that often.
            holding = interval > config.flush_secs
            wake = min(now + 0.5, next_flush)  # logged points arrive without waking the thread
            next_bulk = self._bulk_deadline(interval)
            if next_bulk is not None:
                wake = min(wake, next_bulk)
            if holding:
                wake = min(wake, last_keep + config.flush_secs)
            # (Re)delivery, or a heartbeat when no held wait stands for it
            due = self.delivery.due(now, heartbeats=self._heartbeats_wanted())
            if due is not None:
                wake = min(wake, due)
            self._wake.wait(max(0.0, wake - now))
            self._wake.clear()
            try:
                if self._drain():
                    break
                now = time.monotonic()
                # A follower just came, or a glance (the follow watch): what is held goes now.
                follower, self._follower_came = self._follower_came, False
                glance, self._glance_came = self._glance_came, False
                next_bulk = self._bulk_deadline(interval)
                bulk_due = next_bulk is not None and now >= next_bulk
                if self._pending_points >= self._flush_points or bulk_due or glance:
                    self._flush()
                    last_flush = now
                elif now >= next_flush or self.scalars.count >= self._log_wake or follower:
                    # watch's statistics due within one more flush interval go now, with the
                    # logged points: one request where two would follow each other closely
                    self._flush(bulk=next_bulk is not None and next_bulk - now <= interval)
                    last_flush = now
                elif holding and now >= last_keep + config.flush_secs:
                    self._keep()
                    last_keep = now
                self.delivery.deliver()
                if not self.delivery.unsent_in_memory:
                    self._hold.settle()  # their points were delivered, or journaled
                if self._heartbeats_wanted():
                    self.delivery.heartbeat()
                if not self.delivery.followed and self.follow_watch is not None:
                    self.follow_watch.start()
            except Exception as exc:  # the sender must outlive any single bad item
                self._incidents.error("sender", exc)
        self._shutdown()

    def _heartbeats_wanted(self) -> bool:
        """Whether the run needs heartbeats: no held wait for a follower vouches for it."""
        return self.follow_watch is None or not self.follow_watch.vouches

    def _bulk_deadline(self, interval: float) -> float | None:
        """When watch's statistics and histograms held must go (None: none held): within
        ``stats_flush_secs`` of the oldest, or, while the logged points are held longer (nobody
        follows the run) and copied to disk meanwhile, as long as they are."""
        if self._bulk_since is None:
            return None
        return self._bulk_since + max(self._config.stats_flush_secs, interval)

    def _keep(self) -> None:
        """Copy to the hold file what was logged, and watch's statistics and histograms, since
        the last copy."""
        records = io.BytesIO()
        self.scalars.keep(records)
        for rows in self._rows.values():
            rows.keep(records)
        for name, hist in self._histograms.items():
            hist.keep(records, name)
        self._hold.append(records)

    def flush_interval(self) -> float:
        """Seconds between flushes of logged points: ``flush_secs`` while someone follows the run
        live (or the server does not say), else ``unfollowed_flush_secs``."""
        config = self._config
        return config.flush_secs if self.delivery.followed else config.unfollowed_interval

    def _followed(self) -> None:
        """Someone started following the run (the follow watch's thread): send what is held
        now, and at the fast cadence from here on."""
        self.delivery.followed = True
        self._follower_came = True
        self._wake.set()

    def _glanced(self) -> None:
        """Someone glanced at the run without following it (the runs list; the follow watch's
        thread): send what is held now, statistics too, and keep the slow cadence."""
        self._glance_came = True
        self._wake.set()

    def _drain(self) -> bool:
        """Handle what the inbox holds now; True once the stop sentinel was reached."""
        for _ in range(len(self._inbox)):
            item = self._inbox.popleft()
            if item is _STOP:
                return True
            try:
                if isinstance(item, Sample):
                    self._add(item)
                    if self._pending_points >= self._flush_points:
                        self._flush()  # bounds a batch, and the memory of buffered points
                elif isinstance(item, Request):
                    self._enqueue(item)
                elif isinstance(item, _AfterPoints):
                    self._flush()
                    self._enqueue(item.request)
            except Exception as exc:  # one bad sample must not take the others with it
                self._incidents.error("sender", exc)
        return False

    def _add(self, sample: Sample) -> None:
        self._last_step = sample.step
        if sample.bulk or sample.bins:
            self._bulk_out += 1
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
                    rows = self._rows[keys] = StatRows(keys)
                rows.add(sample.step, sample.time, row)
                self._pending_points += row.numel()
            else:
                values = sample.parcel.values()
                if len(values) != len(sample.keys):
                    raise ValueError(f"{len(values)} values for {len(sample.keys)} keys")
                if sample.layout is not None:
                    self.scalars.add_row(
                        sample.layout, sample.step, sample.time, array("d", values)
                    )
                else:
                    self.scalars.add(
                        sample.step, sample.time, zip(sample.keys, values, strict=True)
                    )
        if sample.host:
            self.scalars.add(sample.step, sample.time, sample.host)
        if self._bulk_since is None and (self._rows or self._histograms):
            self._bulk_since = time.monotonic()

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
                hist = self._histograms[key] = HistogramBuffer(sample.bins)
            hist.steps.append(sample.step)
            hist.lo.append(row[0])
            hist.hi.append(row[1])
            hist.nonfinite.append(row[2])
            hist.counts.extend(row[3:])
            hist.times.append(sample.time)
            self._pending_points += width

    def _clean(self, name: str) -> str:
        """``name`` as the server stores it (see :mod:`trickscope._sanitize`), cached."""
        clean = self._clean_names.get(name)
        if clean is None:
            clean = self._clean_names[name] = clean_text(name, MAX_SERIES_CHARS)
        return clean

    def _flush(self, *, bulk: bool = True, take_wait: float = -1) -> None:
        """Send what was logged, and ``watch``'s statistics and histograms if ``bulk``."""
        thinned = self._incidents.thinned
        if thinned != self._reported_thinned:
            self._reported_thinned = thinned
            self.scalars.add(self._last_step, time.time(), [(self._thinned_key, float(thinned))])
        if bulk and (self._histograms or self._rows):
            # Encoded first, so that their buffered points are out of the count when the logged
            # batches below are weighed against max_buffer_bytes; sent with the first of them
            # (one request instead of two: the server's cost is mostly per request).
            rows = list(self._rows.values())
            histograms, histogram_blocks = histogram_payloads(self._histograms, self._clean)
            self._riding = _Riding(
                series=self._series_columns(rows),
                histograms=histograms,
                histogram_blocks=histogram_blocks,
                points=self._pending_points,
            )
            self._pending_points = 0
            self._rows.clear()
            self._histograms.clear()
            self._bulk_since = None
        try:
            self._flush_logged(take_wait)
        finally:
            self._send_riding()
        # The hold file's points are in requests now (statistics still held are copied again
        # into the next one).
        self._hold.close()
        for rows in self._rows.values():
            rows.kept = 0
        for hist in self._histograms.values():
            hist.kept = 0

    def _flush_logged(self, take_wait: float) -> None:
        """Logged points in batches of at most ``LOG_BATCH_POINTS``: the overflow files first
        (older), then memory, each series in the order it was logged."""
        taken = self._take(take_wait)
        batcher = LoggedBatcher(LOG_BATCH_POINTS, self._enqueue_logged, self._clean)
        for path in taken.files:
            for record in read_overflow(path):
                if isinstance(record, RowBlock):
                    batcher.add_block(record)
                elif isinstance(record, tuple):  # (a hold file's histograms are never here)
                    batcher.add(*record)
            batcher.flush()  # journaled or queued before the file goes
            path.unlink(missing_ok=True)
        for name, columns in taken.series.items():
            batcher.add(name, columns)
        for block in taken.blocks:
            batcher.add_block(block)
        batcher.flush()

    def _take(self, wait: float) -> Taken:
        """The logged points, waiting up to ``wait`` seconds for the training thread's lock
        (-1: until it is free). Once ``close`` was called, never more than ``_FINAL_TAKE_WAIT``:
        the thread that called it may hold the lock (a signal handler finishing the run
        interrupted it inside an append) and waits on this thread."""
        if wait >= 0:
            return self.scalars.take(wait)
        while True:
            closing = self._deadline is not None
            taken = self.scalars.try_take(_FINAL_TAKE_WAIT if closing else _LOCK_SLICE)
            if taken is not None:
                return taken
            if closing:
                return self.scalars.take(0)  # taken all the same, trimmed to whole points

    def _enqueue_logged(self, series: list[SeriesColumns]) -> None:
        riding = self._riding
        histograms: list[HistogramColumns] = []
        histogram_blocks: list[HistogramBlock] = []
        if riding is not None:
            points = sum(len(s.values) for s in series) * 3 // 32  # base64 of 8-byte values
            if riding.points + points <= LOG_BATCH_POINTS or points <= RIDE_ALONG_POINTS:
                self._riding = None
                series, histograms = joined_series(riding.series, series), riding.histograms
                histogram_blocks = riding.histogram_blocks
            else:  # too large together: watch's batch first, on its own
                self._send_riding()
        batch = point_batch(uuid.uuid4().hex, series, histograms, histogram_blocks)
        self._enqueue(Request("POST", self._points_path, encode_points(batch)))

    def _send_riding(self) -> None:
        """Send watch's flushed statistics and histograms on their own, if still held."""
        riding, self._riding = self._riding, None
        if riding is not None:
            batch = point_batch(
                uuid.uuid4().hex, riding.series, riding.histograms, riding.histogram_blocks
            )
            self._enqueue(Request("POST", self._points_path, encode_points(batch)))

    def _series_columns(self, rows: list[StatRows]) -> list[SeriesColumns]:
        """``watch``'s rows as series, their steps and times encoded once per group of keys. A
        series found in more than one group (a gradient that came or went between two layouts)
        is merged into one."""
        seen: Counter[str] = Counter()
        for group in rows:
            seen.update(self._clean(key) for key in group.keys)
        merged: dict[str, tuple[list[int], list[float], list[float]]] = {}
        series: list[SeriesColumns] = []
        for group in rows:
            packed_steps, packed_times = encode_i64(group.steps), encode_f64(group.times)
            matrix = group.columns()
            packed = packed_rows(matrix)
            for index, (key, row) in enumerate(zip(group.keys, packed, strict=True)):
                name = self._clean(key)
                if seen[name] > 1:
                    had = merged.get(name, ([], [], []))
                    merged[name] = (
                        had[0] + group.steps,
                        had[1] + matrix[index].tolist(),
                        had[2] + group.times,
                    )
                else:
                    series.append(SeriesColumns(name, packed_steps, row, packed_times))
        # Step order, and one steps and one times column per distinct pair: merged members of a
        # statistic (grad_dead_units/<layer> in the due steps with and without eps_dominance)
        # then still share their columns and go as one block, not one unordered series each.
        shared: dict[tuple[tuple[int, ...], tuple[float, ...]], tuple[str, str]] = {}
        for name, (steps, values, times) in merged.items():
            order = sorted(range(len(steps)), key=steps.__getitem__)  # stable: repeats keep order
            steps = [steps[i] for i in order]
            times = [times[i] for i in order]
            key = (tuple(steps), tuple(times))
            columns = shared.get(key)
            if columns is None:
                columns = shared[key] = (encode_i64(steps), encode_f64(times))
            values = [values[i] for i in order]
            series.append(SeriesColumns(name, columns[0], encode_f64(values), columns[1]))
        return series

    def _enqueue(self, request: Request) -> None:
        self.delivery.put(request, held_bytes=self._pending_points * _POINT_BYTES)

    def _shutdown(self) -> None:
        if self.follow_watch is not None:
            self.follow_watch.close()
        try:
            while self._inbox:  # what arrived before the stop sentinel, or after it
                self._drain()
            self._flush(take_wait=_FINAL_TAKE_WAIT)
            deadline = self._deadline if self._deadline is not None else time.monotonic()
            self.journal_path, self.dead_letter_path = self.delivery.finish(deadline)
            self._hold.settle()  # everything was delivered or journaled
        except Exception as exc:
            self._incidents.error("sender shutdown", exc)
        finally:
            self.delivery.close()
