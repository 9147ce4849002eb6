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

if TYPE_CHECKING:
    from trickscope_server.services.ingest import DecodedBatch

MAX_HISTOGRAM_BINS = 4096


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


def parse_histograms(
    raw: Any, *, points: int, max_points: int, max_name: int
) -> list[DecodedHistograms]:
    """Validate a batch's ``histograms`` and decode them (``points``: the batch's so far)."""
    if not isinstance(raw, list):
        raise _fail(["body", "histograms"], "must be a list of histogram columns")
    out: list[DecodedHistograms] = []
    cells = points
    for i, item in enumerate(raw):
        loc: list[str | int] = ["body", "histograms", i]
        if not isinstance(item, dict):
            raise _fail(loc, f"must be an object, got {type(item).__name__}")
        name = _name(item.get("name"), [*loc, "name"], max_name)
        bins = item.get("bins")
        if (
            isinstance(bins, bool)
            or not isinstance(bins, int)
            or not 1 <= bins <= MAX_HISTOGRAM_BINS
        ):
            raise _fail([*loc, "bins"], f"must be an integer from 1 to {MAX_HISTOGRAM_BINS}")
        cols = {
            key: _column(item.get(key), [*loc, key], name)
            for key in ("steps", "lo", "hi", "counts", "nonfinite", "times")
        }
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
            raise PayloadTooLargeError(
                f"batch holds more than the server's limit of {max_points} points and histogram "
                "bins (TRICKSCOPE_MAX_BATCH_POINTS): send smaller batches"
            )
        counts = np.frombuffer(cols["counts"], dtype=F64).reshape(n, bins)
        nonfinite = np.frombuffer(cols["nonfinite"], dtype=F64)
        times = np.frombuffer(cols["times"], dtype=F64)
        if not (np.isfinite(counts).all() and np.isfinite(nonfinite).all()):
            raise _fail([*loc, "counts"], f"histograms {name!r}: counts must be finite")
        if not np.isfinite(times).all():
            raise _fail([*loc, "times"], f"histograms {name!r}: times must be finite")
        out.append(
            DecodedHistograms(
                name=name,
                bins=bins,
                steps=np.frombuffer(cols["steps"], dtype=I64),
                lo=np.frombuffer(cols["lo"], dtype=F64),
                hi=np.frombuffer(cols["hi"], dtype=F64),
                counts=counts,
                nonfinite=nonfinite,
                times=times,
            )
        )
    return out


def histogram_rows(run_id: str, batch: DecodedBatch) -> list[dict[str, Any]]:
    """One row per (name, step) of the batch's histograms; the later in the batch wins."""
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for h in batch.histograms:
        for i in range(h.steps.size):
            # Later in the batch wins, as a later batch does (one row per (name, step)).
            rows[(h.name, int(h.steps[i]))] = {
                "run_id": run_id,
                "name": h.name,
                "step": int(h.steps[i]),
                "bins": h.bins,
                "lo": float(h.lo[i]),
                "hi": float(h.hi[i]),
                "counts": h.counts[i].astype(F64).tobytes(),
                "nonfinite": float(h.nonfinite[i]),
                "wall_time": float(h.times[i]),
            }
    return list(rows.values())
