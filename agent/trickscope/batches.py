"""The sender thread's buffers: watch's statistics as rows and histograms column by column,
with their encodings for the wire (logged points are batched in :mod:`trickscope.logged`)."""

from __future__ import annotations

import base64
import binascii
import ctypes
import sys
from array import array
from collections.abc import Callable
from typing import Any, BinaryIO

import torch
from torch import Tensor

from trickscope.scalars import HistogramRows, matrix_bytes, write_rows
from trickscope_wire import (
    HISTOGRAM_BLOCKS_WIRE_VERSION,
    MATRIX_BLOCKS_WIRE_VERSION,
    WIRE_VERSION,
    HistogramBlock,
    HistogramColumns,
    PointBatch,
    SeriesColumns,
    StatBlock,
    decode_f64,
    decode_i64,
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

_LITTLE = sys.byteorder == "little"


class StatRows:
    """Buffered bulk samples of one list of keys, a row of values per sample.

    A due step's statistics (thousands of values) are kept as the host tensor they arrive in and
    only turned into per-series columns when flushed, all at once: the sender thread shares the
    GIL with the training loop, which on a GPU is often bound by its own Python and launches,
    so per value Python work here would slow it.
    """

    __slots__ = ("keys", "steps", "times", "rows", "kept")

    def __init__(self, keys: tuple[str, ...]) -> None:
        self.keys = keys
        self.steps: list[int] = []
        self.times: list[float] = []
        self.rows: list[Tensor] = []
        self.kept = 0  # rows already copied to the sender's hold file

    def keep(self, file: BinaryIO) -> None:
        """Append the rows not copied yet to ``file``, as an overflow record."""
        if self.kept < len(self.rows):
            matrix = torch.stack(self.rows[self.kept :]).to(torch.float64).contiguous()
            steps, times = array("q", self.steps[self.kept :]), array("d", self.times[self.kept :])
            write_rows(file, self.keys, steps, times, matrix_bytes(matrix))
            self.kept = len(self.rows)

    def add(self, step: int, wall: float, values: Tensor) -> None:
        self.steps.append(step)
        self.times.append(wall)
        self.rows.append(values)

    def columns(self) -> Tensor:
        """One row per key, one column per sample: float64, contiguous, on the host."""
        return torch.stack(self.rows).to(torch.float64).T.contiguous()


def packed_rows(matrix: Tensor) -> list[str]:
    """Each row of a contiguous float64 host matrix as an ``encode_f64`` column, packed from the
    matrix's own bytes (one copy out of the tensor, no Python float per value)."""
    if sys.byteorder != "little":
        return [encode_f64(row.tolist()) for row in matrix]
    if matrix.numel() == 0:
        return [encode_f64([]) for _ in range(matrix.shape[0])]
    raw = ctypes.string_at(matrix.data_ptr(), matrix.numel() * 8)
    return encode_f64_rows(raw, matrix.shape[1] * 8)


def encode_points(batch: PointBatch) -> bytes:
    """The batch as JSON, its per-layer statistics as blocks (see :func:`as_blocks`). orjson (a
    dependency; the wire package itself is stdlib-only) writes it ~5x faster: a batch holds only
    strings and ints, so its NaN-as-null rule cannot apply."""
    batch = as_blocks(batch)
    if _fast_dumps is None:
        return dumps(batch)
    return _fast_dumps(batch)


def as_blocks(batch: PointBatch) -> PointBatch:
    """The batch with each group of ``family/<layer>`` series that share one steps and one times
    column object (``watch``'s statistics of a flush: encoded once per group of keys) sent as one
    :class:`StatBlock`, its layers' values as one column; the server then decodes one column
    per statistic, and stores and summarises its layers at once.

    Columns are matched by identity, not by content: series logged one by one keep the
    per-series form even when their steps happen to match.
    """
    groups: dict[tuple[int, int, str], list[SeriesColumns]] = {}
    for series in batch.series:
        family, sep, layer = series.name.partition("/")
        if sep and family and layer:
            groups.setdefault((id(series.steps), id(series.times), family), []).append(series)
    blocks = [
        StatBlock(
            family=family,
            layers=[s.name[len(family) + 1 :] for s in members],
            steps=members[0].steps,
            times=members[0].times,
            values=joined_column([s.values for s in members]),
        )
        for (_, _, family), members in groups.items()
        if len(members) > 1
    ]
    if not blocks:
        return batch
    in_blocks = {id(s) for members in groups.values() if len(members) > 1 for s in members}
    return PointBatch(
        batch_id=batch.batch_id,
        series=[s for s in batch.series if id(s) not in in_blocks],
        histograms=batch.histograms,
        wire_version=max(batch.wire_version, MATRIX_BLOCKS_WIRE_VERSION),
        blocks=blocks,
        histogram_blocks=batch.histogram_blocks,
    )


def joined_column(columns: list[str]) -> str:
    """Packed columns as one: their values one after the other (base64 cannot be joined as text
    where a column's bytes are not a multiple of 3)."""
    decode = binascii.a2b_base64
    raw = b"".join([decode(column) for column in columns])
    return binascii.b2a_base64(raw, newline=False).decode("ascii")


def joined_series(first: list[SeriesColumns], then: list[SeriesColumns]) -> list[SeriesColumns]:
    """Two lists of series as one batch's: a name found more than once becomes one series.

    ``watch``'s statistics ride with the logged points of the same flush, and both carry
    ``grad_norm/total`` (a due step's from the statistics, the other steps' from the per-step
    check): sent as one series, the two need one request, where the same name twice in a batch
    would take the server's slow paths. The merged points are in step order; of two at one
    step, the one from ``then`` stays later, so it wins as it would have, sent after. Series
    named once are kept as they are: their shared column objects still make blocks
    (:func:`as_blocks`).
    """
    named: dict[str, list[SeriesColumns]] = {}
    for series in (*first, *then):
        named.setdefault(series.name, []).append(series)
    out = []
    for name, parts in named.items():
        if len(parts) == 1:
            out.append(parts[0])
            continue
        steps = [step for part in parts for step in decode_i64(part.steps)]
        values = [value for part in parts for value in decode_f64(part.values)]
        times = [wall for part in parts for wall in decode_f64(part.times)]
        order = sorted(range(len(steps)), key=steps.__getitem__)  # stable: ``then`` stays later
        out.append(
            SeriesColumns(
                name,
                encode_i64(steps[i] for i in order),
                encode_f64(values[i] for i in order),
                encode_f64(times[i] for i in order),
            )
        )
    return out


def point_batch(
    batch_id: str,
    series: list[SeriesColumns],
    histograms: list[HistogramColumns],
    histogram_blocks: list[HistogramBlock],
) -> PointBatch:
    """A point batch declaring the wire version its histogram blocks need."""
    return PointBatch(
        batch_id=batch_id,
        series=series,
        histograms=histograms,
        wire_version=HISTOGRAM_BLOCKS_WIRE_VERSION if histogram_blocks else WIRE_VERSION,
        histogram_blocks=histogram_blocks,
    )


class HistogramBuffer:
    """Buffered histograms of one series, column by column."""

    __slots__ = ("bins", "steps", "lo", "hi", "counts", "nonfinite", "times", "kept")

    def __init__(self, bins: int) -> None:
        self.bins = bins
        self.steps: list[int] = []
        self.lo: list[float] = []
        self.hi: list[float] = []
        self.counts: list[float] = []
        self.nonfinite: list[float] = []
        self.times: list[float] = []
        self.kept = 0  # steps already copied to the sender's hold file

    def keep(self, file: BinaryIO, name: str) -> None:
        """Append the steps not copied yet to ``file``, as an overflow record."""
        start = self.kept
        if start < len(self.steps):
            HistogramRows(
                name,
                self.bins,
                array("q", self.steps[start:]),
                array("d", self.times[start:]),
                array("d", self.lo[start:]),
                array("d", self.hi[start:]),
                array("d", self.nonfinite[start:]),
                array("d", self.counts[start * self.bins :]),
            ).write(file)
            self.kept = len(self.steps)

    def extend(self, rows: HistogramRows) -> None:
        """Append a hold file's record of this series."""
        self.steps.extend(rows.steps)
        self.times.extend(rows.times)
        self.lo.extend(rows.lo)
        self.hi.extend(rows.hi)
        self.nonfinite.extend(rows.nonfinite)
        self.counts.extend(rows.counts)

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


def histogram_payloads(
    buffers: dict[str, HistogramBuffer], clean: Callable[[str], str]
) -> tuple[list[HistogramColumns], list[HistogramBlock]]:
    """Buffered histograms for the wire. The layers of a family (``grad_hist/<layer>``) with one
    bin count, logged at the same steps and times (``watch``'s of a flush), go as one
    :class:`HistogramBlock`: the server decodes a handful of columns instead of six for each
    histogram. The others go as one :class:`HistogramColumns` each."""
    singles: list[HistogramColumns] = []
    groups: dict[tuple[str, int, tuple[int, ...], tuple[float, ...]], dict[str, HistogramBuffer]]
    groups = {}
    for key, hist in buffers.items():
        name = clean(key)
        family, sep, layer = name.partition("/")
        if sep and family and layer:
            group = groups.setdefault((family, hist.bins, tuple(hist.steps), tuple(hist.times)), {})
            if layer not in group:  # a name cleaned into another's stays apart
                group[layer] = hist
                continue
        singles.append(hist.columns(name))
    blocks = []
    for (family, bins, steps, times), members in groups.items():
        if len(members) < 2:
            singles.extend(hist.columns(f"{family}/{layer}") for layer, hist in members.items())
            continue
        columns = {key: array("d") for key in ("lo", "hi", "nonfinite", "counts")}
        for hist in members.values():
            columns["lo"].extend(hist.lo)
            columns["hi"].extend(hist.hi)
            columns["nonfinite"].extend(hist.nonfinite)
            columns["counts"].extend(hist.counts)
        packed = {key: b64_column(column) for key, column in columns.items()}
        blocks.append(
            HistogramBlock(
                family=family,
                layers=list(members),
                bins=bins,
                steps=encode_i64(steps),
                times=encode_f64(times),
                **packed,
            )
        )
    return singles, blocks


def b64_column(column: array[Any]) -> str:
    """A packed ``q``/``d`` column as the wire's base64 of little-endian bytes."""
    if not _LITTLE:
        column = array(column.typecode, column)
        column.byteswap()
    return base64.b64encode(memoryview(column)).decode("ascii")
