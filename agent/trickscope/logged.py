"""Logged points into wire batches: per-series columns and row blocks, on the sender thread.

A row block (a wide dict logged step after step) is turned into one column per series here, in
bulk: its rows are transposed as one tensor and packed from that tensor's bytes, and the steps
and times, which every series of the block shares, are encoded once per batch.
"""

from __future__ import annotations

from collections.abc import Callable

from trickscope.batches import b64_column, packed_rows
from trickscope.scalars import Columns, RowBlock, slice_columns
from trickscope_wire import SeriesColumns


class LoggedBatcher:
    """Groups logged points into batches of at most ``limit`` points (a row wider than
    ``limit`` goes alone), each series at most once per batch, in the order they were added.

    Args:
        limit: Points per batch.
        emit: Called with each full batch's series.
        clean: A name as the server stores it (see :mod:`trickscope._sanitize`).
    """

    def __init__(
        self,
        limit: int,
        emit: Callable[[list[SeriesColumns]], None],
        clean: Callable[[str], str],
    ) -> None:
        self._limit = limit
        self._emit = emit
        self._clean = clean
        self._series: dict[str, Columns] = {}  # columns still to encode, merged by name
        self._encoded: list[SeriesColumns] = []  # pieces of row blocks, encoded
        self._encoded_names: set[str] = set()
        self._count = 0

    def add(self, name: str, columns: Columns) -> None:
        """Add one series' points (split across batches past the limit)."""
        name = self._clean(name)
        if name in self._encoded_names:  # a block earlier in this batch holds it: keep order
            self.flush()
        total, start = len(columns), 0
        while start < total:
            take = min(self._limit - self._count, total - start)
            whole = start == 0 and take == total
            piece = columns if whole else slice_columns(columns, start, start + take)
            held = self._series.get(name)
            if held is None:
                self._series[name] = piece
            else:
                held.extend(piece)
            self._count += take
            start += take
            if self._count >= self._limit:
                self.flush()

    def add_block(self, block: RowBlock) -> None:
        """Add a row block's points: every row of a series in one piece where the limit allows
        (the server's cost is mostly per series and batch), as many series per batch as fit."""
        width, rows = len(block.layout), block.rows
        if not width or not rows:
            return
        names = block.layout.wire_names
        if names is None:
            names = block.layout.wire_names = [self._clean(name) for name in block.layout.names]
        if len(set(names)) < width:  # two keys the server stores under one name: merge them
            for name, columns in block.columns():
                self.add(name, columns)
            return
        if not self._encoded_names.isdisjoint(names) or not self._series.keys().isdisjoint(names):
            self.flush()
        for first in range(0, rows, self._limit):  # a series longer than a batch: in pieces
            last = min(rows, first + self._limit)
            length = last - first
            steps, times = b64_column(block.steps[first:last]), b64_column(block.times[first:last])
            values = packed_rows(block.matrix(first, last))
            start = 0
            while start < width:
                if self._count + length > self._limit:
                    self.flush()
                stop = min(width, start + max(1, (self._limit - self._count) // length))
                self._encoded.extend(
                    SeriesColumns(name, steps, packed, times)
                    for name, packed in zip(names[start:stop], values[start:stop], strict=True)
                )
                self._encoded_names.update(names[start:stop])
                self._count += (stop - start) * length
                start = stop
        if self._count >= self._limit:
            self.flush()

    def flush(self) -> None:
        """Emit what is held as one batch."""
        if not self._series and not self._encoded:
            return
        series = [
            SeriesColumns(name, b64_column(c.steps), b64_column(c.values), b64_column(c.times))
            for name, c in self._series.items()
        ]
        series.extend(self._encoded)
        self._series, self._encoded, self._encoded_names, self._count = {}, [], set(), 0
        self._emit(series)
