"""Logged points, held as packed columns until the sender thread takes them.

``run.log`` runs on the training thread, maybe a million times a second in a tight loop, and
every point must reach the server. A queue of Python objects would cost ~100 bytes a point and
must either block or drop when full. Here each series is three ``array`` columns (int64 steps,
float64 values, float64 wall times): 24 bytes a point, one lock around a few appends, no object
per value. A wide dict logged step after step (the same keys in the same order: a
:class:`Layout`) is kept as a :class:`RowBlock` instead, one row of values per step, so that
``log`` does no Python work per key; the sender turns rows into columns in bulk. A series lives
in one place at a time: when a name turns up in a second layout, or alone as well as in a
layout, the rows held so far become columns first (:meth:`ScalarBuffer._seal`), which keeps
every series in the order it was logged.

Past ``max_bytes`` (the sender thread is behind: a slow server, a starved thread) what is held
is appended, as raw bytes, to an overflow file beside the journal and the memory is reused: the
training thread never waits longer than that append, and nothing is dropped. The sender reads
overflow files back, oldest first, before what is still in memory.

Overflow records, native byte order, names in UTF-8 with surrogates passed through:
``<u8 0, u32 name bytes, u32 points>``, the name, then the steps, values and times columns; or
``<u8 1, u32 width, u32 rows>``, ``width`` times ``<u32 name bytes>`` and the name, then the
steps and times columns and the ``rows x width`` values, row by row. The sender's hold files
(:mod:`trickscope.held`) use the same records, and one more for histograms
(:class:`HistogramRows`). :meth:`ScalarBuffer.keep` copies what was logged since its last call
into such a file, leaving it held.
"""

from __future__ import annotations

import ctypes
import os
import struct
import threading
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch

from trickscope import _ownership

POINT_BYTES = 24  # int64 step, float64 value, float64 time
_HEADER = struct.Struct("<BII")
_NAME = struct.Struct("<I")
_HIST = struct.Struct("<I")
_SERIES, _BLOCK, _HISTOGRAMS = 0, 1, 2


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


class Layout:
    """The series names of a dict that ``log`` receives again and again, in its key order.

    Compared by identity: the caller keeps one per key order and hands the same object back.
    ``wire_names`` is left for the sender thread (the names as the server stores them).
    """

    __slots__ = ("names", "wire_names", "__weakref__")

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names
        self.wire_names: list[str] | None = None

    def __len__(self) -> int:
        return len(self.names)


class RowBlock:
    """Points of one :class:`Layout`: a step, a time and a row of ``len(layout)`` values per
    ``log`` call, the rows back to back in one float64 array."""

    __slots__ = ("layout", "steps", "times", "values")

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.steps: array[int] = array("q")
        self.times: array[float] = array("d")
        self.values: array[float] = array("d")

    def __len__(self) -> int:
        """Points held (rows times width)."""
        return len(self.values)

    @property
    def rows(self) -> int:
        return len(self.steps)

    def matrix(self, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Rows ``start:stop`` as a ``width x rows`` float64 tensor, one row per series (a copy:
        the block's array may grow afterwards)."""
        stop = self.rows if stop is None else stop
        width = len(self.layout)
        if stop <= start or width == 0:
            return torch.empty((width, 0), dtype=torch.float64)
        flat = torch.frombuffer(
            self.values, dtype=torch.float64, count=(stop - start) * width, offset=start * width * 8
        )
        return flat.view(stop - start, width).T.contiguous()

    def columns(self) -> Iterator[tuple[str, Columns]]:
        """Each series' points, as columns."""
        if not self.rows:
            return
        raw = matrix_bytes(self.matrix())
        row_bytes = self.rows * 8
        for index, name in enumerate(self.layout.names):
            values = array("d")
            values.frombytes(raw[index * row_bytes : (index + 1) * row_bytes])
            yield name, Columns(array("q", self.steps), values, array("d", self.times))


def matrix_bytes(matrix: torch.Tensor) -> bytes:
    """A contiguous host tensor's bytes, in native order (one copy, no Python object per
    value)."""
    return ctypes.string_at(matrix.data_ptr(), matrix.numel() * matrix.element_size())


@dataclass
class Taken:
    """What :meth:`ScalarBuffer.take` hands the sender: overflow files (oldest first; read them
    with :func:`read_overflow`, then delete them), then the series and row blocks that were in
    memory, which are newer. No series is in both ``series`` and ``blocks``."""

    files: list[Path]
    series: dict[str, Columns]
    blocks: list[RowBlock]

    def __bool__(self) -> bool:
        return bool(self.files or self.series or self.blocks)


class ScalarBuffer:
    """Packed columns and row blocks shared by the training thread (appends) and the sender
    (takes them all at once).

    Args:
        max_bytes: Memory for points not taken yet; past it they go to an overflow file.
        overflow_dir: Where overflow files are written, named ``<stem>.overflow.<pid>.<n>``.
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
        self._blocks: dict[Layout, RowBlock] = {}
        self._block_names: set[str] = set()  # every name of self._blocks
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
        # How much of each series and row block held is already copied to disk (see ``keep``).
        self._kept_series: dict[str, int] = {}
        self._kept_rows: dict[Layout, int] = {}

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
                    columns = self._new_series(name)
                # The value first: a bad one raises before the step is appended.
                columns.values.append(value)
                try:
                    columns.steps.append(step)
                except OverflowError:
                    columns.values.pop()
                    raise
                columns.times.append(wall)
                added += 1
            self._added(added)

    def add_point(self, name: str, step: int, value: float, wall: float) -> None:
        """:meth:`add` of one point, without building a list (the hot path of ``run.log``)."""
        with self._lock:
            columns = self._series.get(name)
            if columns is None:
                columns = self._new_series(name)
            columns.values.append(value)
            try:
                columns.steps.append(step)
            except OverflowError:
                columns.values.pop()
                raise
            columns.times.append(wall)
            # _added(1), inline: this is the hot path of a tight loop of single values.
            self._count += 1
            if self._count >= self._flush_points and not self._signalled:
                self._signalled = True
                self._on_full()
            if self._count >= self._max_points:
                self._spill()

    def add_row(self, layout: Layout, step: int, wall: float, values: array[float]) -> None:
        """Append one point to each series of ``layout``: ``values`` in its order. Raises
        ``OverflowError`` (before appending anything) for a step outside int64."""
        if len(values) != len(layout):
            raise ValueError(f"{len(values)} values for {len(layout)} names")
        with self._lock:
            block = self._blocks.get(layout)
            if block is None:
                names = layout.names
                if not self._block_names.isdisjoint(names):
                    self._seal()
                if not self._series.keys().isdisjoint(names):
                    # Some of these series hold points already: append to them, in order.
                    self._add_columns(names, step, wall, values)
                    return
                block = self._blocks[layout] = RowBlock(layout)
                self._block_names.update(names)
            block.steps.append(step)
            block.values.extend(values)
            block.times.append(wall)
            self._added(len(values))

    def _new_series(self, name: str) -> Columns:
        """The columns of a series not held as such yet (lock held): those of its rows if a
        block holds it, else empty ones."""
        if name in self._block_names:
            self._seal()
            columns = self._series.get(name)
            if columns is not None:
                return columns
        columns = self._series[name] = Columns.empty()
        return columns

    def _add_columns(
        self, names: tuple[str, ...], step: int, wall: float, values: array[float]
    ) -> None:
        """:meth:`add_row` one series at a time (lock held)."""
        array("q", [step])  # raises OverflowError before anything is appended
        for name, value in zip(names, values, strict=True):
            columns = self._series.get(name)
            if columns is None:
                columns = self._new_series(name)
            columns.steps.append(step)
            columns.values.append(value)
            columns.times.append(wall)
        self._added(len(values))

    def _added(self, points: int) -> None:
        """Count ``points`` just appended; wake the sender or spill as due (lock held)."""
        self._count += points
        if self._count >= self._flush_points and not self._signalled:
            self._signalled = True
            self._on_full()
        if self._count >= self._max_points:
            self._spill()

    def _seal(self) -> None:
        """Turn every row block into per-series columns (lock held): a name about to be
        appended elsewhere keeps its earlier points ahead of the new ones."""
        for block in self._blocks.values():
            kept = self._kept_rows.pop(block.layout, 0)
            for name, columns in block.columns():
                held = self._series.get(name)
                if held is None:
                    self._series[name] = columns
                    if kept:
                        self._kept_series[name] = kept
                else:
                    held.extend(columns)
        self._blocks = {}
        self._block_names = set()

    def _spill(self) -> None:
        """Append everything held to the overflow file and empty memory (lock held)."""
        if self._overflow is None:
            self._overflow_dir.mkdir(parents=True, exist_ok=True)
            self._overflow_files += 1
            name = owned_file_name(self._stem, "overflow", self._overflow_files)
            path = self._overflow_dir / name
            self._overflow = open(path, "ab")
            _ownership.hold(self._overflow)  # until it is closed, to be read back and deleted
            self._overflow_path = path
        file = self._overflow
        for name, columns in self._series.items():
            write_series(file, name, columns)
        for block in self._blocks.values():
            write_rows(file, block.layout.names, block.steps, block.times, block.values)
        file.flush()
        self.peak_points = max(self.peak_points, self._count)
        self.spilled_points += self._count
        self._series = {}
        self._blocks = {}
        self._block_names = set()
        self._count = 0
        self._kept_series, self._kept_rows = {}, {}

    def keep(self, file: BinaryIO) -> int:
        """Append to ``file``, in the overflow format, a copy of the points logged since the
        last ``keep``, take or spill; they stay held here. Returns the points written.

        The sender holds logged points for a long while when nobody follows the run: this copy
        is what a killed process leaves behind, for ``trickscope sync`` to send.
        """
        written = 0
        with self._lock:
            for name, columns in self._series.items():
                kept = self._kept_series.get(name, 0)
                if kept < len(columns):
                    write_series(file, name, slice_columns(columns, kept, len(columns)))
                    written += len(columns) - kept
                    self._kept_series[name] = len(columns)
            for layout, block in self._blocks.items():
                kept = self._kept_rows.get(layout, 0)
                if kept < block.rows:
                    width = len(layout)
                    write_rows(
                        file,
                        layout.names,
                        block.steps[kept:],
                        block.times[kept:],
                        block.values[kept * width :],
                    )
                    written += (block.rows - kept) * width
                    self._kept_rows[layout] = block.rows
        return written

    def take(self, wait: float = -1) -> Taken:
        """Everything logged so far (see :class:`Taken`).

        ``wait`` bounds how long to wait for the lock (-1: as long as it takes). At exit, a
        signal handler may have interrupted the training thread inside an append while it held
        the lock; that thread is then stopped in the handler, so everything is taken anyway and
        trimmed to whole points (a half-appended point or row is the only possible damage).
        """
        locked = self._lock.acquire(timeout=wait)
        try:
            taken = self._take_all()
        finally:
            if locked:
                self._lock.release()
        if not locked:
            for columns in taken.series.values():
                _trim(columns)
            for block in taken.blocks:
                _trim_block(block)
        return taken

    def try_take(self, wait: float) -> Taken | None:
        """:meth:`take` if the lock comes free within ``wait`` seconds; else None, nothing
        taken."""
        if not self._lock.acquire(timeout=wait):
            return None
        try:
            return self._take_all()
        finally:
            self._lock.release()

    def _take_all(self) -> Taken:
        taken = Taken([], self._series, list(self._blocks.values()))
        self._series, self._blocks, self._block_names = {}, {}, set()
        self._kept_series, self._kept_rows = {}, {}
        self.peak_points = max(self.peak_points, self._count)
        self._count = 0
        self._signalled = False
        if self._overflow is not None and self._overflow_path is not None:
            self._overflow.close()
            taken.files.append(self._overflow_path)
            self._overflow = None
            self._overflow_path = None
        return taken


def owned_file_name(stem: str, kind: str, number: int) -> str:
    """``<stem>.<kind>.<pid>.<number>``: a file of this process (``trickscope sync`` leaves a
    live process's files alone; see :mod:`trickscope.held`)."""
    return f"{stem}.{kind}.{os.getpid()}.{number}"


def write_series(file: BinaryIO, name: str, columns: Columns) -> None:
    """One series' points as an overflow record."""
    encoded = name.encode("utf-8", "surrogatepass")
    file.write(_HEADER.pack(_SERIES, len(encoded), len(columns)))
    file.write(encoded)
    columns.steps.tofile(file)
    columns.values.tofile(file)
    columns.times.tofile(file)


def write_rows(
    file: BinaryIO,
    names: Sequence[str],
    steps: array[int],
    times: array[float],
    values: array[float] | bytes,
) -> None:
    """Rows of ``names`` (one step, one time and ``len(names)`` float64 values each, the rows
    back to back) as an overflow record."""
    file.write(_HEADER.pack(_BLOCK, len(names), len(steps)))
    for name in names:
        encoded = name.encode("utf-8", "surrogatepass")
        file.write(_NAME.pack(len(encoded)))
        file.write(encoded)
    steps.tofile(file)
    times.tofile(file)
    if isinstance(values, bytes):
        file.write(values)
    else:
        values.tofile(file)


def slice_columns(columns: Columns, start: int, stop: int) -> Columns:
    """Points ``start:stop`` of a series (a copy)."""
    return Columns(columns.steps[start:stop], columns.values[start:stop], columns.times[start:stop])


def _trim(columns: Columns) -> None:
    length = min(len(columns.steps), len(columns.values), len(columns.times))
    for column in (columns.steps, columns.values, columns.times):
        del column[length:]


def _trim_block(block: RowBlock) -> None:
    rows = min(len(block.steps), len(block.times), len(block.values) // max(1, len(block.layout)))
    del block.steps[rows:], block.times[rows:], block.values[rows * len(block.layout) :]


@dataclass
class HistogramRows:
    """Histograms of one series, as the sender's hold file keeps them (never in the overflow
    files of logged points): per step a time, the range, the non-finite count and ``bins``
    counts, the counts of all steps back to back."""

    name: str
    bins: int
    steps: array[int]
    times: array[float]
    lo: array[float]
    hi: array[float]
    nonfinite: array[float]
    counts: array[float]

    def write(self, file: BinaryIO) -> None:
        """This as an overflow record: ``<u8 2, u32 name bytes, u32 rows>``, ``<u32 bins>``, the
        name, then the steps, times, lo, hi and non-finite columns and the counts."""
        encoded = self.name.encode("utf-8", "surrogatepass")
        file.write(_HEADER.pack(_HISTOGRAMS, len(encoded), len(self.steps)))
        file.write(_HIST.pack(self.bins))
        file.write(encoded)
        for column in (self.steps, self.times, self.lo, self.hi, self.nonfinite, self.counts):
            column.tofile(file)


def _read_histograms(file: BinaryIO, size: int, rows: int) -> HistogramRows:
    raw = file.read(_HIST.size)
    if len(raw) < _HIST.size:
        raise _CutShort()
    (bins,) = _HIST.unpack(raw)
    name = file.read(size).decode("utf-8", "surrogatepass")
    record = HistogramRows(name, bins, array("q"), *(array("d") for _ in range(5)))
    try:
        for column in (record.steps, record.times, record.lo, record.hi, record.nonfinite):
            column.fromfile(file, rows)
        record.counts.fromfile(file, rows * bins)
    except EOFError:  # cut short: the process died while writing it; its whole steps are kept
        whole = min(len(record.nonfinite), len(record.counts) // max(1, bins))
        for column in (record.steps, record.times, record.lo, record.hi, record.nonfinite):
            del column[whole:]
        del record.counts[whole * bins :]
        raise _CutShort(record if whole else None) from None
    return record


def read_overflow(path: Path) -> Iterator[tuple[str, Columns] | RowBlock | HistogramRows]:
    """The records of an overflow file, in the order they were written: a series' columns as
    ``(name, columns)``, a layout's rows as a :class:`RowBlock`, a hold file's histograms as
    :class:`HistogramRows`."""
    with open(path, "rb") as file:
        while True:
            header = file.read(_HEADER.size)
            if len(header) < _HEADER.size:
                return
            kind, size, count = _HEADER.unpack(header)
            try:
                if kind == _BLOCK:
                    yield _read_block(file, size, count)
                    continue
                if kind == _HISTOGRAMS:
                    yield _read_histograms(file, size, count)
                    continue
                name = file.read(size).decode("utf-8", "surrogatepass")
                columns = Columns.empty()
                try:
                    columns.steps.fromfile(file, count)
                    columns.values.fromfile(file, count)
                    columns.times.fromfile(file, count)
                except EOFError:  # a record cut short (the process died while writing it)
                    _trim(columns)
                    if len(columns):
                        yield name, columns
                    return
                yield name, columns
            except _CutShort as cut:
                if isinstance(cut.block, HistogramRows) or (
                    cut.block is not None and cut.block.rows
                ):
                    yield cut.block
                return


class _CutShort(Exception):
    def __init__(self, block: RowBlock | HistogramRows | None = None) -> None:
        self.block = block


def _read_block(file: BinaryIO, width: int, rows: int) -> RowBlock:
    names = []
    for _ in range(width):
        size = file.read(_NAME.size)
        if len(size) < _NAME.size:
            raise _CutShort()
        (length,) = _NAME.unpack(size)
        names.append(file.read(length).decode("utf-8", "surrogatepass"))
    block = RowBlock(Layout(tuple(names)))
    try:
        block.steps.fromfile(file, rows)
        block.times.fromfile(file, rows)
        block.values.fromfile(file, rows * width)
    except EOFError:
        _trim_block(block)
        raise _CutShort(block) from None
    return block
