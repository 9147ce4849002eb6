"""Server-side downsampling of long series to what a chart can show, extremes preserved.

MinMaxLTTB (Van Der Donckt et al., 2023, https://arxiv.org/abs/2305.00332) keeps the visual
shape; a MinMax pass on top guarantees each bucket's minimum and maximum, so a spike that lasted
one step is still drawn on a 1M-point chart. Non-finite points (NaN, ±Inf) are what a diagnostics
chart exists to show, so they are never left to chance: they are kept explicitly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from tsdownsample import MinMaxDownsampler, MinMaxLTTBDownsampler

# tsdownsample panics (a BaseException, uncatchable as Exception) below these sizes.
_MIN_LTTB = 3
_MIN_MINMAX = 4  # MinMaxDownsampler panics with fewer than 2 bins (n_out < 4)


def dedupe_latest(steps: NDArray[np.int64], *columns: NDArray[Any]) -> tuple[NDArray[Any], ...]:
    """Sort by step and keep, for a step logged more than once, the latest write.

    ``steps`` and ``columns`` are in ingest order (chunk id, then position in the chunk).
    """
    if steps.size < 2 or bool(np.all(steps[1:] > steps[:-1])):
        return (steps, *columns)  # the common case: already strictly increasing
    reversed_steps = steps[::-1]
    # np.unique's return_index is the first occurrence, i.e. the latest write in reversed order.
    unique, first = np.unique(reversed_steps, return_index=True)
    return (unique, *(column[::-1][first] for column in columns))


def _nonfinite_keep(nonfinite: NDArray[np.bool_], budget: int) -> NDArray[np.intp]:
    # Every non-finite point when they fit in half the budget; otherwise the first and last of
    # each contiguous non-finite run (where a chart's gap starts and ends), then thinned evenly.
    idx = np.flatnonzero(nonfinite)
    if idx.size <= budget // 2:
        return idx
    edges = np.flatnonzero(np.diff(idx) != 1)
    idx = np.unique(np.concatenate([idx[:1], idx[edges], idx[edges + 1], idx[-1:]]))
    if idx.size > budget // 2:
        idx = idx[np.linspace(0, idx.size - 1, max(budget // 2, 1)).astype(np.intp)]
    return idx


def downsample(
    steps: NDArray[np.int64], values: NDArray[np.float64], budget: int
) -> NDArray[np.intp]:
    """Indices (sorted) of at most ``budget`` points that keep the series' shape and extremes.

    Every index when the series fits in the budget. ``steps`` must be strictly increasing.
    """
    if budget < _MIN_LTTB:
        raise ValueError(f"budget must be at least {_MIN_LTTB}, got {budget}")
    n = steps.size
    if n <= budget:
        return np.arange(n, dtype=np.intp)
    finite = np.isfinite(values)
    keep_nonfinite = _nonfinite_keep(~finite, budget)
    finite_idx = np.flatnonzero(finite)
    room = budget - keep_nonfinite.size
    if finite_idx.size <= room:
        chosen = finite_idx
    elif room < _MIN_LTTB:
        chosen = finite_idx[np.linspace(0, finite_idx.size - 1, room).astype(np.intp)]
    else:
        x = steps[finite_idx]
        y = values[finite_idx]
        lttb_n = max(room // 2, _MIN_LTTB)
        minmax_n = max((room - lttb_n) // 2 * 2, _MIN_MINMAX)
        parts = [
            MinMaxLTTBDownsampler().downsample(  # type: ignore[no-untyped-call]
                x, y, n_out=lttb_n
            )
        ]
        if room - lttb_n >= _MIN_MINMAX:
            parts.append(
                MinMaxDownsampler().downsample(  # type: ignore[no-untyped-call]
                    x, y, n_out=minmax_n
                )
            )
        chosen = finite_idx[np.unique(np.concatenate(parts).astype(np.intp))]
    return np.unique(np.concatenate([chosen, keep_nonfinite]).astype(np.intp))
