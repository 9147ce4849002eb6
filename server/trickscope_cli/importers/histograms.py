"""Histograms of any bucket widths, as the server's equal-width bins.

TensorBoard keeps buckets of any widths: torch's ``add_histogram`` (its default
``bins="tensorflow"``) and TensorFlow 1 write exponentially spaced bucket limits, while
``add_histogram(bins=<int>)`` and TensorFlow 2 write equal widths. The server stores ``bins``
equal-width bins over ``[lo, hi]`` per step and draws every histogram of one name with one bin
count, so per name:

- equal-width buckets are kept exactly: their outer edges become ``lo`` and ``hi`` and their
  counts the bins; one with fewer buckets than the name's bin count gets empty bins of the same
  width on its right, which keeps it exact;
- buckets of unequal widths are re-binned onto the name's bins over their own range, each
  bucket's count spread evenly over its width; the total count is kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

DEFAULT_BINS = 64
"""Bins of a name whose histograms all have unequal bucket widths."""

_SAME_WIDTH_RTOL = 1e-6  # np.linspace edges differ from exact multiples by rounding only


@dataclass(frozen=True)
class Buckets:
    """One histogram as contiguous buckets: ``edges`` ascending, one more than ``counts``."""

    step: int
    wall_time: float
    edges: NDArray[np.float64]
    counts: NDArray[np.float64]

    @property
    def equal_width(self) -> bool:
        """Whether every bucket has the same width (up to the rounding of computed edges)."""
        widths = np.diff(self.edges)
        return bool(np.allclose(widths, widths[0], rtol=_SAME_WIDTH_RTOL, atol=0.0))


@dataclass(frozen=True)
class Binned:
    """Histograms of one name in the wire's layout: ``bins`` equal-width bins per step."""

    bins: int
    steps: list[int]
    times: list[float]
    lo: list[float]
    hi: list[float]
    counts: NDArray[np.float64]  # (len(steps), bins)


def _trimmed(edges: NDArray[np.float64], counts: NDArray[np.float64]) -> Buckets | None:
    """Edges and counts without the empty buckets at either end; None when the edges are not
    finite and ascending."""
    filled = np.flatnonzero(counts)
    if filled.size:
        first, last = int(filled[0]), int(filled[-1])
        edges, counts = edges[first : last + 2], counts[first : last + 1]
    else:  # an empty histogram: one empty bin over its range
        edges, counts = edges[[0, -1]], np.zeros(1)
    if not np.isfinite(edges).all() or (np.diff(edges) < 0).any():
        return None
    return Buckets(step=0, wall_time=0.0, edges=edges, counts=counts)


def from_limits(
    bucket_limit: Sequence[float],
    bucket: Sequence[float],
    minimum: float,
    maximum: float,
) -> tuple[NDArray[np.float64], NDArray[np.float64]] | None:
    """Edges and counts of a TensorBoard ``HistogramProto``; None when it cannot be drawn.

    Bucket ``i`` holds the values up to ``bucket_limit[i]`` above the previous limit; the first
    bucket has no lower limit and TensorFlow's outermost limits are ±DBL_MAX, so the outer edges
    are taken from the recorded minimum and maximum where they lie inside the end buckets.
    """
    limits = np.asarray(bucket_limit, dtype=np.float64)
    counts = np.asarray(bucket, dtype=np.float64)
    if limits.size != counts.size or counts.size == 0:
        return None
    filled = np.flatnonzero(counts)
    if filled.size == 0:
        return np.array([minimum, maximum], dtype=np.float64), np.zeros(1)
    first, last = int(filled[0]), int(filled[-1])
    left = limits[first - 1] if first > 0 else minimum
    edges = np.concatenate([[left], limits[first : last + 1]])
    counts = counts[first : last + 1]
    # The recorded extremes tighten the outer buckets (an open first bucket, a DBL_MAX limit);
    # torch's equal-width buckets start and end at them already.
    if minimum <= maximum:
        edges[0] = max(edges[0], min(minimum, edges[1]))
        edges[-1] = min(edges[-1], max(maximum, edges[-2]))
    return edges, counts


def from_triples(buckets: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Edges and counts of a TensorFlow 2 histogram tensor: rows of (left, right, count)."""
    buckets = np.asarray(buckets, dtype=np.float64).reshape(-1, 3)
    if buckets.shape[0] == 0:
        return np.zeros(2), np.zeros(1)
    edges = np.concatenate([buckets[:1, 0], buckets[:, 1]])
    return edges, buckets[:, 2].copy()


def make_buckets(
    step: int, wall_time: float, edges: NDArray[np.float64], counts: NDArray[np.float64]
) -> Buckets | None:
    """A :class:`Buckets` without empty end buckets; None when its edges are unusable."""
    trimmed = _trimmed(np.asarray(edges, np.float64), np.asarray(counts, np.float64))
    if trimmed is None:
        return None
    return Buckets(step=step, wall_time=wall_time, edges=trimmed.edges, counts=trimmed.counts)


def _rebinned(h: Buckets, bins: int) -> tuple[float, float, NDArray[np.float64]]:
    """``bins`` equal-width bins over the histogram's range: its cumulative count, linear within
    each bucket, read at the new edges."""
    lo, hi = float(h.edges[0]), float(h.edges[-1])
    cumulative = np.concatenate([[0.0], np.cumsum(h.counts)])
    if hi == lo:  # every value equal: all of them in the first bin
        counts = np.zeros(bins)
        counts[0] = cumulative[-1]
        return lo, hi, counts
    at_edges = np.interp(np.linspace(lo, hi, bins + 1), h.edges, cumulative)
    return lo, hi, np.diff(at_edges)


def _padded(h: Buckets, bins: int) -> tuple[float, float, NDArray[np.float64]]:
    """The equal-width buckets themselves, with empty bins of the same width on the right."""
    lo, hi = float(h.edges[0]), float(h.edges[-1])
    k = h.counts.size
    if k < bins:
        hi = lo + (hi - lo) / k * bins
    return lo, hi, np.concatenate([h.counts, np.zeros(bins - k)])


def to_bins(histograms: Sequence[Buckets]) -> Binned:
    """The histograms of one name in the wire's layout, with one bin count for all of them."""
    equal = [h.equal_width for h in histograms]
    widest = max((h.counts.size for h, ok in zip(histograms, equal, strict=True) if ok), default=0)
    bins = widest or DEFAULT_BINS
    lo: list[float] = []
    hi: list[float] = []
    rows: list[NDArray[np.float64]] = []
    for h, ok in zip(histograms, equal, strict=True):
        low, high, counts = _padded(h, bins) if ok else _rebinned(h, bins)
        lo.append(low)
        hi.append(high)
        rows.append(counts)
    return Binned(
        bins=bins,
        steps=[h.step for h in histograms],
        times=[h.wall_time for h in histograms],
        lo=lo,
        hi=hi,
        counts=np.vstack(rows) if rows else np.zeros((0, bins)),
    )
