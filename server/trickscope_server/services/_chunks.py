"""Pure array work on chunks: digests for coarse reads, origin sequences, merging for compaction.

A digest keeps, per block of ``DIGEST_BLOCK`` points, the minimum and the maximum finite value and
the edges of every run of non-finite values, plus the chunk's first and last point. A chart bucket
that spans whole blocks therefore has the same extremes in the digest as in the points, so a coarse
read (``DIGEST_BLOCK`` or more points per bucket) decodes 1/32 of the data and still shows a spike
that lasted one step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from trickscope_server.downsample import dedupe_latest

I64 = np.dtype("<i8")
F64 = np.dtype("<f8")

DIGEST_BLOCK = 64
DIGEST_MIN = 4 * DIGEST_BLOCK  # smaller chunks are cheaper to decode than to plan around


def _strictly_increasing(steps: NDArray[np.int64]) -> bool:
    return steps.size < 2 or bool(np.all(steps[1:] > steps[:-1]))


def digest(steps: NDArray[np.int64], values: NDArray[np.float64]) -> tuple[bytes, bytes] | None:
    """The digest of a chunk as packed (steps, values), or None for small or unsorted chunks."""
    n = int(steps.size)
    if n < DIGEST_MIN or not _strictly_increasing(steps):
        return None
    blocks = -(-n // DIGEST_BLOCK)
    finite = np.isfinite(values)
    pad = blocks * DIGEST_BLOCK - n
    low = np.concatenate([np.where(finite, values, np.inf), np.full(pad, np.inf)])
    high = np.concatenate([np.where(finite, values, -np.inf), np.full(pad, -np.inf)])
    base = np.arange(blocks, dtype=np.intp) * DIGEST_BLOCK
    argmin = base + np.argmin(low.reshape(blocks, DIGEST_BLOCK), axis=1)
    argmax = base + np.argmax(high.reshape(blocks, DIGEST_BLOCK), axis=1)
    # Class of each value (finite, NaN, +Inf, -Inf); a change of class is an edge to keep.
    kind = np.where(finite, 0, np.where(np.isnan(values), 1, np.where(values > 0, 2, 3)))
    change = np.flatnonzero(kind[1:] != kind[:-1])
    edges = np.concatenate([change, change + 1])
    edges = edges[kind[edges] != 0]
    idx = np.unique(np.concatenate([argmin, argmax, edges, [0, n - 1]]).astype(np.intp))
    idx = idx[idx < n]
    return steps[idx].astype(I64).tobytes(), values[idx].astype(F64).tobytes()


def encode_origins(origins: NDArray[np.int64]) -> bytes:
    """Per-point ingest sequences, run-length encoded as int64 (sequence, length) pairs."""
    n = origins.size
    starts = np.flatnonzero(np.concatenate([[True], origins[1:] != origins[:-1]]))
    lengths = np.diff(np.append(starts, n))
    return np.stack([origins[starts], lengths], axis=1).astype(I64).tobytes()


def decode_origins(raw: bytes | None, *, seq: int, count: int) -> NDArray[np.int64]:
    """Per-point ingest sequences of a chunk (all ``seq`` for a fresh chunk)."""
    if raw is None:
        return np.full(count, seq, dtype=I64)
    pairs = np.frombuffer(raw, dtype=I64).reshape(-1, 2)
    return np.repeat(pairs[:, 0], pairs[:, 1]).astype(I64)


@dataclass(frozen=True)
class Part:
    """A chunk's columns as arrays, in ingest order."""

    seq: int
    steps: NDArray[np.int64]
    values: NDArray[np.float64]
    times: NDArray[np.float64]
    origins: NDArray[np.int64]


def merge(parts: list[Part], *, run_id: str, series_id: int, seq_lo: int) -> dict[str, Any]:
    """One compacted chunk row from chunks in ingest order: sorted by step, later write wins."""
    steps = np.concatenate([p.steps for p in parts])
    values = np.concatenate([p.values for p in parts])
    times = np.concatenate([p.times for p in parts])
    origins = np.concatenate([p.origins for p in parts])
    steps, values, times, origins = dedupe_latest(steps, values, times, origins)
    finite = np.isfinite(values)
    has_finite = bool(finite.any())
    dig = digest(steps, values)
    return {
        "run_id": run_id,
        "series_id": series_id,
        "step_min": int(steps[0]),
        "step_max": int(steps[-1]),
        "count": int(steps.size),
        "vmin": float(values[finite].min()) if has_finite else None,
        "vmax": float(values[finite].max()) if has_finite else None,
        "steps": steps.astype(I64).tobytes(),
        "values": values.astype(F64).tobytes(),
        "times": times.astype(F64).tobytes(),
        "seq": max(p.seq for p in parts),
        "seq_lo": seq_lo,
        "origins": encode_origins(origins),
        "dsteps": None if dig is None else dig[0],
        "dvalues": None if dig is None else dig[1],
    }


def merge_stacked(
    *,
    run_id: str,
    members: NDArray[np.int64],
    seqs: list[int],
    steps: list[NDArray[np.int64]],
    times: list[NDArray[np.float64]],
    values: list[NDArray[np.float64]],
) -> list[dict[str, Any]]:
    """One compacted chunk row per member from blocks that share their members (in order) and
    whose steps rise strictly from one block to the next: :func:`merge` of each member's rows,
    with the work shared by all members (steps, times, origins, extremes, digests) done once
    over the stacked matrix.

    ``values[i]`` is block ``i``'s members x steps matrix, ``seqs[i]`` its sequence.
    """
    all_steps = np.concatenate(steps).astype(I64)
    matrix = np.hstack(values)  # members x steps
    n = int(all_steps.size)
    steps_raw = all_steps.tobytes()
    times_raw = np.concatenate(times).astype(F64).tobytes()
    origins = encode_origins(np.repeat(np.array(seqs, dtype=I64), [s.size for s in steps]))
    finite = np.isfinite(matrix)
    all_finite = finite.all(axis=1)
    with np.errstate(invalid="ignore"):
        vmin = np.where(finite, matrix, np.inf).min(axis=1)
        vmax = np.where(finite, matrix, -np.inf).max(axis=1)
    has_finite = finite.any(axis=1)
    lows = highs = None
    if n >= DIGEST_MIN:
        blocks = -(-n // DIGEST_BLOCK)
        pad = blocks * DIGEST_BLOCK - n
        padded = np.pad(matrix, ((0, 0), (0, pad)), constant_values=np.nan)
        shaped = padded.reshape(matrix.shape[0], blocks, DIGEST_BLOCK)
        base = np.arange(blocks, dtype=np.intp) * DIGEST_BLOCK
        with np.errstate(invalid="ignore"):
            lows = base + np.argmin(np.where(np.isnan(shaped), np.inf, shaped), axis=2)
            highs = base + np.argmax(np.where(np.isnan(shaped), -np.inf, shaped), axis=2)
    picks = keep = None
    if lows is not None and highs is not None:
        # Each row's digest indices, sorted; ``keep`` drops the repeats.
        ends = np.broadcast_to(np.array([0, n - 1], dtype=np.intp), (matrix.shape[0], 2))
        picks = np.sort(np.concatenate([lows, highs, ends], axis=1), axis=1)
        keep = np.ones(picks.shape, dtype=bool)
        keep[:, 1:] = picks[:, 1:] != picks[:, :-1]
    seq, seq_lo = max(seqs), min(seqs)
    rows = []
    for i, sid in enumerate(members.tolist()):
        row = matrix[i]
        if picks is None or keep is None:
            dig = None
        elif all_finite[i]:
            idx = picks[i][keep[i]]
            dig = all_steps[idx].tobytes(), row[idx].tobytes()
        else:
            dig = digest(all_steps, row)
        rows.append(
            {
                "run_id": run_id,
                "series_id": sid,
                "step_min": int(all_steps[0]),
                "step_max": int(all_steps[-1]),
                "count": n,
                "vmin": float(vmin[i]) if has_finite[i] else None,
                "vmax": float(vmax[i]) if has_finite[i] else None,
                "steps": steps_raw,
                "values": row.astype(F64).tobytes(),
                "times": times_raw,
                "seq": seq,
                "seq_lo": seq_lo,
                "origins": origins,
                "dsteps": None if dig is None else dig[0],
                "dvalues": None if dig is None else dig[1],
            }
        )
    return rows
