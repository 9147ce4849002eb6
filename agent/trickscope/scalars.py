"""Logged points, held as packed columns until the sender thread takes them.

``run.log`` runs on the training thread, maybe a million times a second in a tight loop, and
every point must reach the server. A queue of Python objects would cost ~100 bytes a point and
must either block or drop when full. Here each series is three ``array`` columns (int64 steps,
float64 values, float64 wall times): 24 bytes a point, one lock around a few appends, no object
per value. Past ``max_bytes`` (the sender thread is behind: a slow server, a starved thread) the
columns are appended, as raw bytes, to an overflow file beside the journal and the memory is
reused: the training thread never waits longer than that append, and nothing is dropped. The
sender reads overflow files back, oldest first, before what is still in memory.

Overflow record: ``<u32 name bytes, u32 points>``, the UTF-8 name (surrogates passed through),
then the steps, values and times columns in native byte order.
"""

from __future__ import annotations

import struct
import threading
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

POINT_BYTES = 24  # int64 step, float64 value, float64 time
_HEADER = struct.Struct("<II")


@dataclass
class Columns:
    """One series' points, in the order they were logged."""

    steps: array[int]
    values: array[float]
    times: array[float]

    @classmethod
    def empty(cls) -> Columns:
        return cls(array("q"), array("d"), array("d"))

    def __len__(self) -> int:
        return len(self.steps)

    def extend(self, other: Columns) -> None:
        self.steps.extend(other.steps)
        self.values.extend(other.values)
        self.times.extend(other.times)


class ScalarBuffer:
    """Per-series packed columns shared by the training thread (appends) and the sender
    (takes them all at once).

    Args:
        max_bytes: Memory for points not taken yet; past it they go to an overflow file.
        overflow_dir: Where overflow files are written, named ``<stem>.overflow.<n>``.
        stem: The run's file stem (its id, with the rank for ranks other than 0).
        flush_points: Points at which ``on_full`` is called once, to wake the sender early.
        on_full: Called (on the appending thread) when ``flush_points`` are waiting.
    """

    def __init__(
        self,
        *,
        max_bytes: int,
        overflow_dir: Path,
        stem: str,
        flush_points: int,
        on_full: Callable[[], None] = lambda: None,
    ) -> None:
        self._lock = threading.Lock()
        self._series: dict[str, Columns] = {}
        self._count = 0
        self._max_points = max(1, max_bytes // POINT_BYTES)
        self._flush_points = flush_points
        self._on_full = on_full
        self._signalled = False
        self._overflow_dir = overflow_dir
        self._stem = stem
        self._overflow: BinaryIO | None = None
        self._overflow_path: Path | None = None
        self._overflow_files = 0
        self.spilled_points = 0  # points ever written to overflow files
        self.peak_points = 0  # most points held in memory at once

    @property
    def count(self) -> int:
        """Points in memory, not taken yet."""
        return self._count

    def add(self, step: int, wall: float, items: Iterable[tuple[str, float]]) -> None:
        """Append ``(name, value)`` points of one step. Raises ``OverflowError`` (before
        appending anything) for a step outside int64, ``TypeError`` for a value that is no
        number."""
        with self._lock:
            series = self._series
            added = 0
            for name, value in items:
                columns = series.get(name)
                if columns is None:
                    columns = series[name] = Columns.empty()
                # The value first: a bad one raises before the step is appended.
                columns.values.append(value)
                try:
                    columns.steps.append(step)
                except OverflowError:
                    columns.values.pop()
                    raise
                columns.times.append(wall)
                added += 1
            self._count += added
            if self._count >= self._flush_points and not self._signalled:
                self._signalled = True
                self._on_full()
            if self._count >= self._max_points:
                self._spill()

    def add_point(self, name: str, step: int, value: float, wall: float) -> None:
        """:meth:`add` of one point, without building a list (the hot path of ``run.log``)."""
        with self._lock:
            columns = self._series.get(name)
            if columns is None:
                columns = self._series[name] = Columns.empty()
            columns.values.append(value)
            try:
                columns.steps.append(step)
            except OverflowError:
                columns.values.pop()
                raise
            columns.times.append(wall)
            self._count += 1
            if self._count >= self._flush_points and not self._signalled:
                self._signalled = True
                self._on_full()
            if self._count >= self._max_points:
                self._spill()

    def _spill(self) -> None:
        """Append every series to the overflow file and empty memory (lock held)."""
        if self._overflow is None:
            self._overflow_dir.mkdir(parents=True, exist_ok=True)
            self._overflow_files += 1
            path = self._overflow_dir / f"{self._stem}.overflow.{self._overflow_files}"
            self._overflow = open(path, "ab")
            self._overflow_path = path
        file = self._overflow
        for name, columns in self._series.items():
            encoded = name.encode("utf-8", "surrogatepass")
            file.write(_HEADER.pack(len(encoded), len(columns)))
            file.write(encoded)
            columns.steps.tofile(file)
            columns.values.tofile(file)
            columns.times.tofile(file)
        file.flush()
        self.peak_points = max(self.peak_points, self._count)
        self.spilled_points += self._count
        self._series = {}
        self._count = 0

    def take(self, wait: float = -1) -> tuple[list[Path], dict[str, Columns]]:
        """Everything logged so far: overflow files (oldest first; the caller reads them with
        :func:`read_overflow` and deletes them) and the series in memory, which are newer.

        ``wait`` bounds how long to wait for the lock (-1: as long as it takes). At exit, a
        signal handler may have interrupted the training thread inside :meth:`add` while it held
        the lock; that thread is then stopped in the handler, so the columns are taken anyway
        and trimmed to their common length (a half-appended point is the only possible damage).
        """
        locked = self._lock.acquire(timeout=wait)
        try:
            series, self._series = self._series, {}
            self.peak_points = max(self.peak_points, self._count)
            self._count = 0
            self._signalled = False
            files: list[Path] = []
            if self._overflow is not None and self._overflow_path is not None:
                self._overflow.close()
                files.append(self._overflow_path)
                self._overflow = None
                self._overflow_path = None
        finally:
            if locked:
                self._lock.release()
        if not locked:
            for columns in series.values():
                _trim(columns)
        return files, series


def _trim(columns: Columns) -> None:
    length = min(len(columns.steps), len(columns.values), len(columns.times))
    for column in (columns.steps, columns.values, columns.times):
        del column[length:]


def read_overflow(path: Path) -> Iterator[tuple[str, Columns]]:
    """The records of an overflow file, in the order they were written."""
    with open(path, "rb") as file:
        while True:
            header = file.read(_HEADER.size)
            if len(header) < _HEADER.size:
                return
            name_bytes, points = _HEADER.unpack(header)
            name = file.read(name_bytes).decode("utf-8", "surrogatepass")
            columns = Columns.empty()
            try:
                columns.steps.fromfile(file, points)
                columns.values.fromfile(file, points)
                columns.times.fromfile(file, points)
            except EOFError:  # a record cut short (the process died while writing it)
                _trim(columns)
                if len(columns):
                    yield name, columns
                return
            yield name, columns
