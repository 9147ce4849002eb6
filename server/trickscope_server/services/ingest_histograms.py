"""Histograms of a point batch: validation and decoding, and their rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from trickscope_server.errors import PayloadTooLargeError
from trickscope_server.services._convert import F64, I64
from trickscope_server.services._payload import checked_name as _name
from trickscope_server.services._payload import column as _column
from trickscope_server.services._payload import fail as _fail
from trickscope_server.services.ingest_blocks import member_names
from trickscope_server.storage.histogram_blocks import NewBlock
from trickscope_server.storage.histograms import HistogramValues

if TYPE_CHECKING:
    from trickscope_server.services.ingest import DecodedBatch

MAX_HISTOGRAM_BINS = 4096
_COLUMNS = ("steps", "lo", "hi", "counts", "nonfinite", "times")
_SHARED = frozenset({"steps", "times"})  # columns many histograms of a batch repeat


@dataclass(frozen=True)
class DecodedHistograms:
    """Histograms of one name at several steps."""

    name: str
    bins: int
    steps: NDArray[np.int64]
    lo: NDArray[np.float64]
    hi: NDArray[np.float64]
    counts: NDArray[np.float64]  # (len(steps), bins)
    nonfinite: NDArray[np.float64]
    times: NDArray[np.float64]


@dataclass(frozen=True)
class DecodedHistogramBlock:
    """Histograms of many layers over the same steps: the raw columns, checked."""

    family: str
    layers: tuple[str, ...]
    bins: int
    steps: NDArray[np.int64]
    columns: dict[str, bytes]  # steps, times, lo, hi, nonfinite, counts: little-endian 8-byte

    def stored(self) -> NewBlock:
        """The block as the store takes it."""
        cols = self.columns
        return NewBlock(
            family=self.family,
            layers=self.layers,
            bins=self.bins,
            steps=self.steps.tolist(),
            steps_raw=cols["steps"],
            times=cols["times"],
            lo=cols["lo"],
            hi=cols["hi"],
            nonfinite=cols["nonfinite"],
            counts=cols["counts"],
        )


def _bins(value: Any, loc: list[str | int]) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not 1 <= value <= MAX_HISTOGRAM_BINS
    ):
        raise _fail([*loc, "bins"], f"must be an integer from 1 to {MAX_HISTOGRAM_BINS}")
    return value


def _too_many(max_points: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"batch holds more than the server's limit of {max_points} points and histogram "
        "bins (TRICKSCOPE_MAX_BATCH_POINTS): send smaller batches"
    )


def parse_histogram_blocks(
    raw: Any, *, points: int, max_points: int, max_name: int
) -> list[DecodedHistogramBlock]:
    """Validate a batch's ``histogram_blocks`` and decode them (``points``: the batch's points
    and bins so far)."""
    if not isinstance(raw, list):
        raise _fail(["body", "histogram_blocks"], "must be a list of histogram blocks")
    out: list[DecodedHistogramBlock] = []
    for i, item in enumerate(raw):
        loc: list[str | int] = ["body", "histogram_blocks", i]
        if not isinstance(item, dict):
            raise _fail(loc, f"must be an object, got {type(item).__name__}")
        family = _name(item.get("family"), [*loc, "family"], max_name)
        if "/" in family:
            raise _fail([*loc, "family"], "must be a histogram family name without '/'")
        layers = item.get("layers")
        if not isinstance(layers, list) or not layers:
            raise _fail([*loc, "layers"], f"block {family!r}: must be a non-empty list of layers")
        names, (_, layer_names) = member_names(family, layers, loc, max_name)
        bins = _bins(item.get("bins"), loc)
        cols = {key: _column(item.get(key), [*loc, key], family) for key in _COLUMNS}
        steps = len(cols["steps"]) // 8
        cells = len(names) * steps
        if len(cols["times"]) // 8 != steps:
            raise _fail([*loc, "times"], f"block {family!r}: needs {steps} values, one per step")
        for key in ("lo", "hi", "nonfinite"):
            if len(cols[key]) // 8 != cells:
                raise _fail([*loc, key], f"block {family!r}: needs {cells} values (layers x steps)")
        if len(cols["counts"]) // 8 != cells * bins:
            raise _fail(
                [*loc, "counts"],
                f"block {family!r}: needs {cells * bins} counts (layers x steps x bins)",
            )
        points += cells * bins
        if points > max_points:
            raise _too_many(max_points)
        counts = np.frombuffer(cols["counts"], dtype=F64)
        nonfinite = np.frombuffer(cols["nonfinite"], dtype=F64)
        if not (np.isfinite(counts).all() and np.isfinite(nonfinite).all()):
            raise _fail([*loc, "counts"], f"block {family!r}: counts must be finite")
        if not np.isfinite(np.frombuffer(cols["times"], dtype=F64)).all():
            raise _fail([*loc, "times"], f"block {family!r}: times must be finite")
        steps_array = np.frombuffer(cols["steps"], dtype=I64)
        out.append(DecodedHistogramBlock(family, layer_names, bins, steps_array, cols))
    return out


def parse_histograms(
    raw: Any, *, points: int, max_points: int, max_name: int
) -> list[DecodedHistograms]:
    """Validate a batch's ``histograms`` and decode them (``points``: the batch's so far)."""
    if not isinstance(raw, list):
        raise _fail(["body", "histograms"], "must be a list of histogram columns")
    out: list[DecodedHistograms] = []
    cells = points
    # The agent sends every histogram of a flush over one steps and one times column (the same
    # text): each distinct text is decoded once.
    shared: dict[str, bytes] = {}
    for i, item in enumerate(raw):
        loc: list[str | int] = ["body", "histograms", i]
        if not isinstance(item, dict):
            raise _fail(loc, f"must be an object, got {type(item).__name__}")
        name = _name(item.get("name"), [*loc, "name"], max_name)
        bins = _bins(item.get("bins"), loc)
        cols: dict[str, bytes] = {}
        for key in _COLUMNS:
            text = item.get(key)
            known = shared.get(text) if key in _SHARED and type(text) is str else None
            if known is None:
                known = _column(text, [*loc, key], name)
                if key in _SHARED:
                    shared[text] = known
            cols[key] = known
        n = len(cols["steps"]) // 8
        for key in ("lo", "hi", "nonfinite", "times"):
            if len(cols[key]) // 8 != n:
                raise _fail([*loc, key], f"histograms {name!r}: needs {n} values, one per step")
        if len(cols["counts"]) // 8 != n * bins:
            raise _fail(
                [*loc, "counts"], f"histograms {name!r}: needs {n} x {bins} counts (steps x bins)"
            )
        cells += n * bins
        if cells > max_points:
            raise _too_many(max_points)
        out.append(
            DecodedHistograms(
                name=name,
                bins=bins,
                steps=np.frombuffer(cols["steps"], dtype=I64),
                lo=np.frombuffer(cols["lo"], dtype=F64),
                hi=np.frombuffer(cols["hi"], dtype=F64),
                counts=np.frombuffer(cols["counts"], dtype=F64).reshape(n, bins),
                nonfinite=np.frombuffer(cols["nonfinite"], dtype=F64),
                times=np.frombuffer(cols["times"], dtype=F64),
            )
        )
    _check_finite(out)
    return out


def _check_finite(histograms: list[DecodedHistograms]) -> None:
    """Counts and times must be finite: checked over the whole batch at once, then, only on a
    failure, histogram by histogram to say which."""
    if not histograms:
        return
    counts = np.concatenate(
        [h.counts.ravel() for h in histograms] + [h.nonfinite for h in histograms]
    )
    times = np.concatenate([h.times for h in histograms])
    if np.isfinite(counts).all() and np.isfinite(times).all():
        return
    for i, h in enumerate(histograms):
        loc: list[str | int] = ["body", "histograms", i]
        if not (np.isfinite(h.counts).all() and np.isfinite(h.nonfinite).all()):
            raise _fail([*loc, "counts"], f"histograms {h.name!r}: counts must be finite")
        if not np.isfinite(h.times).all():
            raise _fail([*loc, "times"], f"histograms {h.name!r}: times must be finite")


def histogram_rows(run_id: str, batch: DecodedBatch) -> list[HistogramValues]:
    """One row per (name, step) of the batch's histograms in the per-name form; the later in the
    batch wins (its blocks are stored after these rows, and win over them)."""
    rows: dict[tuple[str, int], HistogramValues] = {}
    for h in batch.histograms:
        steps = h.steps.tolist()
        lo, hi, nonfinite, times = (
            h.lo.tolist(),
            h.hi.tolist(),
            h.nonfinite.tolist(),
            h.times.tolist(),
        )
        for i, step in enumerate(steps):
            # Later in the batch wins, as a later batch does (one row per (name, step)).
            rows[(h.name, step)] = (
                run_id,
                h.name,
                step,
                h.bins,
                lo[i],
                hi[i],
                h.counts[i].tobytes(),
                nonfinite[i],
                times[i],
            )
    return list(rows.values())
