"""Chart reads: one series downsampled to a point budget, and one statistic over all layers."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
from numpy.typing import NDArray

from trickscope_server.downsample import dedupe_latest, downsample
from trickscope_server.errors import InvalidPayloadError, SeriesNotFoundError
from trickscope_server.services._convert import F64, I64, concat, json_values
from trickscope_server.services.runs import require_run
from trickscope_server.storage import Database
from trickscope_server.storage import points as store
from trickscope_server.storage import runs as run_store
from trickscope_wire import finite_or_token

# Aggregates that share a per-layer statistic's prefix but are not layers (grad_norm/total).
_NOT_LAYERS = frozenset({"total"})


def check_budget(points: int, *, max_points: int) -> None:
    """Reject point budgets a chart cannot use."""
    if not 3 <= points <= max_points:
        raise InvalidPayloadError(
            f"points must be between 3 and {max_points}, got {points}",
            errors=[{"loc": ["query", "points"], "msg": f"must be between 3 and {max_points}"}],
        )


def read_points(
    db: Database,
    *,
    run_id: str,
    name: str,
    start: int | None,
    end: int | None,
    points: int,
    max_points: int,
) -> dict[str, Any]:
    """``SeriesPoints`` of a series in [start, end]: exact when the window fits the budget."""
    check_budget(points, max_points=max_points)
    if start is not None and end is not None and start > end:
        raise InvalidPayloadError(
            f"start ({start}) must not be greater than end ({end})",
            errors=[{"loc": ["query", "start"], "msg": "must not be greater than end"}],
        )
    with db.reader() as session:
        require_run(session, run_id)
        series = store.get_series(session, run_id=run_id, name=name)
        if series is None:
            raise SeriesNotFoundError(
                f"run {run_id!r} has no series {name!r}: "
                f"GET /api/v1/runs/{run_id}/series lists them"
            )
        # The cursor is read first and bounds the chunks, so "after=cursor" resumes without a gap.
        cursor = store.max_chunk_id(session, run_id=run_id)
        rows = store.series_chunks(
            session, series_id=series.id, start=start, end=end, max_id=cursor
        )
    if rows:
        steps = concat([r[0] for r in rows], I64)
        values = concat([r[1] for r in rows], F64)
        times = concat([r[2] for r in rows], F64)
        steps, values, times = dedupe_latest(steps, values, times)
    else:
        steps = np.empty(0, I64)
        values = times = np.empty(0, F64)
    lo = 0 if start is None else int(np.searchsorted(steps, start, "left"))
    hi = steps.size if end is None else int(np.searchsorted(steps, end, "right"))
    steps, values, times = steps[lo:hi], values[lo:hi], times[lo:hi]
    idx = downsample(steps, values, points)
    return {
        "name": name,
        "step": steps[idx].tolist(),
        "value": json_values(values[idx]),
        "wall_time": json_values(times[idx]),
        "downsampled": bool(idx.size < steps.size),
        "total": int(steps.size),
        "cursor": cursor,
    }


def _bucket_extremes(
    buckets: NDArray[np.intp], values: NDArray[np.float64]
) -> tuple[NDArray[np.intp], NDArray[np.float64]]:
    # Per bucket, the value of largest magnitude (non-finite first): a spike must survive.
    magnitude = np.where(np.isfinite(values), np.abs(values), np.inf)
    order = np.lexsort((magnitude, buckets))
    sorted_buckets = buckets[order]
    last = np.flatnonzero(np.append(sorted_buckets[1:] != sorted_buckets[:-1], True))
    return sorted_buckets[last], values[order][last]


def _json_row(values: NDArray[np.float64], present: NDArray[np.bool_]) -> list[Any]:
    row: list[Any] = values.tolist()
    for i in np.flatnonzero(~present).tolist():
        row[i] = None
    for i in np.flatnonzero(present & ~np.isfinite(values)).tolist():
        row[i] = finite_or_token(row[i])
    return row


def read_heatmap(
    db: Database, *, run_id: str, stat: str, points: int, max_points: int
) -> dict[str, Any]:
    """``Heatmap`` of ``<stat>/<layer>`` series over a common step grid, in one query."""
    check_budget(points, max_points=max_points)
    if not stat or "/" in stat:
        raise InvalidPayloadError(
            f"stat must be a statistic name without '/', e.g. grad_norm; got {stat!r:.80}",
            errors=[{"loc": ["query", "stat"], "msg": "must be a name without '/'"}],
        )
    prefix = stat + "/"
    with db.reader() as session:
        run = require_run(session, run_id)
        declared = list(run.layers)
        rows = store.prefixed_chunks(session, run_id=run_id, prefix=prefix)
    parts: dict[str, tuple[list[bytes], list[bytes]]] = defaultdict(lambda: ([], []))
    for name, steps_raw, values_raw in rows:
        layer = name[len(prefix) :]
        if layer in _NOT_LAYERS:
            continue
        parts[layer][0].append(steps_raw)
        parts[layer][1].append(values_raw)
    present = set(parts)
    order = [layer for layer in declared if layer in present]
    order += sorted(present - set(order))
    columns = {
        layer: dedupe_latest(concat(parts[layer][0], I64), concat(parts[layer][1], F64))
        for layer in order
    }
    grid = (
        np.unique(np.concatenate([c[0] for c in columns.values()])) if columns else np.empty(0, I64)
    )
    downsampled = grid.size > points
    if downsampled:
        # Equal-count buckets over the union of steps; each labelled by its first step.
        bucket_of = (np.arange(grid.size) * points) // grid.size
        starts = np.flatnonzero(np.append(True, bucket_of[1:] != bucket_of[:-1]))
        grid = grid[starts]
    z: list[list[Any]] = []
    for layer in order:
        steps, values = columns[layer][0], columns[layer][1]
        cells = np.zeros(grid.size, F64)
        filled = np.zeros(grid.size, np.bool_)
        positions = np.searchsorted(grid, steps, "right" if downsampled else "left")
        if downsampled:
            buckets, extremes = _bucket_extremes(positions - 1, values)  # type: ignore[arg-type]
            cells[buckets] = extremes
            filled[buckets] = True
        else:
            cells[positions] = values
            filled[positions] = True
        z.append(_json_row(cells, filled))
    return {
        "stat": stat,
        "layers": order,
        "step": grid.tolist(),
        "z": z,
        "downsampled": downsampled,
    }


def read_events(
    db: Database, *, run_id: str, after: int, limit: int
) -> tuple[int, dict[str, dict[str, list[Any]]], str] | None:
    """Chunks after the cursor, grouped by series: (new cursor, series columns, run status).

    None when the run no longer exists.
    """
    with db.reader() as session:
        run = run_store.get_run(session, run_id)
        if run is None:
            return None
        status = run.status
        rows = store.chunks_after(session, run_id=run_id, after=after, limit=limit)
    grouped: dict[str, tuple[list[bytes], list[bytes]]] = defaultdict(lambda: ([], []))
    cursor = after
    for chunk_id, name, steps_raw, values_raw in rows:
        grouped[name][0].append(steps_raw)
        grouped[name][1].append(values_raw)
        cursor = chunk_id
    series = {
        name: {
            "step": concat(steps_parts, I64).tolist(),
            "value": json_values(concat(values_parts, F64)),
        }
        for name, (steps_parts, values_parts) in grouped.items()
    }
    return cursor, series, status
