"""A batch's chunk rows and summary rows, one of each per series: the series' extent, extremes,
last value and first non-finite step, merged into its stored summary at ingest
(``storage/summaries.py``). Three paths compute the same rows (``tests/unit/server/
test_batch_summaries.py`` holds them equal): plain Python for a few points, one vectorised pass
over a batch of many series, numpy per series otherwise."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from trickscope_server.services._chunks import DIGEST_MIN, digest
from trickscope_server.services.summaries import PLAIN_POINTS

if TYPE_CHECKING:
    from trickscope_server.services.ingest import DecodedSeries


def _rows(
    series: DecodedSeries,
    run_id: str,
    series_id: int,
    seq: int,
    *,
    first: int,
    last: int,
    count: int,
    vmin: float | None,
    vmax: float | None,
    last_value: float,
    nonfinite: int | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A series' chunk row and its summary row, from its extent and extremes."""
    dig = digest(series.steps, series.values) if count >= DIGEST_MIN else None
    chunk = {
        "run_id": run_id,
        "series_id": series_id,
        "step_min": first,
        "step_max": last,
        "count": count,
        "vmin": vmin,
        "vmax": vmax,
        "steps": series.steps_raw,
        "values": series.values_raw,
        "times": series.times_raw,
        "seq": seq,
        "seq_lo": seq,
        "origins": None,
        "dsteps": None if dig is None else dig[0],
        "dvalues": None if dig is None else dig[1],
    }
    summary = {
        "b_id": series_id,
        "b_count": count,
        "b_first": first,
        "b_last": last,
        "b_last_value": last_value,
        "b_min": vmin,
        "b_max": vmax,
        "b_nonfinite": nonfinite,
    }
    return chunk, summary


def series_summary(
    series: DecodedSeries, run_id: str, series_id: int, seq: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """:func:`_rows` of any series: non-finite values, steps in any order."""
    steps, values = series.steps, series.values
    finite = np.isfinite(values)
    has_finite = bool(finite.any())
    nonfinite_steps = steps[~finite]
    # The last value is the one at the highest step; of equal steps, the later position wins.
    latest = steps.size - 1 - int(np.argmax(steps[::-1]))
    return _rows(
        series,
        run_id,
        series_id,
        seq,
        first=int(steps.min()),
        last=int(steps.max()),
        count=int(steps.size),
        vmin=float(values[finite].min()) if has_finite else None,
        vmax=float(values[finite].max()) if has_finite else None,
        last_value=float(values[latest]),
        nonfinite=int(nonfinite_steps.min()) if nonfinite_steps.size else None,
    )


def plain_summary(
    series: DecodedSeries, run_id: str, series_id: int, seq: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """:func:`series_summary` in plain Python, for a few points (see ``PLAIN_POINTS``)."""
    steps, values = series.steps.tolist(), series.values.tolist()
    last = max(steps)
    latest = len(steps) - 1 - steps[::-1].index(last)  # of equal steps, the later wins
    finite = [v for v in values if math.isfinite(v)]
    nonfinite = [step for step, v in zip(steps, values, strict=True) if not math.isfinite(v)]
    return _rows(
        series,
        run_id,
        series_id,
        seq,
        first=min(steps),
        last=last,
        count=len(steps),
        vmin=min(finite) if finite else None,
        vmax=max(finite) if finite else None,
        last_value=values[latest],
        nonfinite=min(nonfinite) if nonfinite else None,
    )


def batch_summaries(
    series: list[DecodedSeries], ids: dict[str, int], run_id: str, seq: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Chunk rows and summary rows of a batch's series.

    The common series (finite values, strictly increasing steps) are summarised with one
    ``reduceat`` per statistic over all of them at once instead of a dozen small numpy calls per
    series; the others take the per-series path. A NaN in one layer's statistics, the case a user
    is investigating, leaves the rest of the batch on the fast path.
    """
    if sum(s.steps.size for s in series) <= PLAIN_POINTS:
        pairs = [plain_summary(s, run_id, ids[s.name], seq) for s in series]
        return [p[0] for p in pairs], [p[1] for p in pairs]
    if len(series) < 3:  # from three series on, one pass over the batch costs less
        pairs = [series_summary(s, run_id, ids[s.name], seq) for s in series]
        return [p[0] for p in pairs], [p[1] for p in pairs]
    sizes = np.fromiter((s.steps.size for s in series), dtype=np.intp, count=len(series))
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    steps = np.concatenate([s.steps for s in series])
    values = np.concatenate([s.values for s in series])
    irregular_point = ~np.isfinite(values)
    step_back = np.diff(steps) <= 0
    step_back[starts[1:] - 1] = False  # a series boundary is not a step back
    irregular_point[1:] |= step_back
    irregular = np.logical_or.reduceat(irregular_point, starts).tolist()
    ends = starts + sizes - 1
    first_steps = steps[starts].tolist()
    last_steps = steps[ends].tolist()
    last_values = values[ends].tolist()
    vmins = np.minimum.reduceat(values, starts).tolist()
    vmaxs = np.maximum.reduceat(values, starts).tolist()
    counts = sizes.tolist()
    chunks, summaries = [], []
    for i, s in enumerate(series):
        if irregular[i]:
            chunk, summary = series_summary(s, run_id, ids[s.name], seq)
        else:
            chunk, summary = _rows(
                s,
                run_id,
                ids[s.name],
                seq,
                first=first_steps[i],
                last=last_steps[i],
                count=counts[i],
                vmin=vmins[i],
                vmax=vmaxs[i],
                last_value=last_values[i],
                nonfinite=None,
            )
        chunks.append(chunk)
        summaries.append(summary)
    return chunks, summaries
