"""Chart reads: one series downsampled to a point budget (the heatmap and live reads, in
``heatmap.py`` and ``events.py``, are re-exported here for the API and the live feed)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from trickscope_server.downsample import dedupe_latest, downsample
from trickscope_server.errors import InvalidPayloadError, SeriesNotFoundError
from trickscope_server.services._chunks import DIGEST_BLOCK, decode_origins
from trickscope_server.services._convert import F64, I64, check_budget, json_values
from trickscope_server.services.events import read_events
from trickscope_server.services.heatmap import LayerGrid, load_layer_grid, read_heatmap
from trickscope_server.services.runs import require_run
from trickscope_server.storage import Database, Session
from trickscope_server.storage import blocks as block_store
from trickscope_server.storage import chunks as chunk_store
from trickscope_server.storage import histograms as histogram_store
from trickscope_server.storage import points as store
from trickscope_server.storage import runs as run_store
from trickscope_wire import finite_or_token


@dataclass(frozen=True)
class _Loaded:
    steps: NDArray[np.int64]
    values: NDArray[np.float64]
    times: NDArray[np.float64] | None
    total: int  # points in the window (digests stand for more points than they hold)


def _isolated(metas: list[chunk_store.ChunkMeta]) -> set[int]:
    # Chunks whose step range overlaps no other chunk's: no re-logged step can hide in them.
    order = sorted(metas, key=lambda m: (m.step_min, m.step_max))
    out: set[int] = set()
    reach = None
    for i, m in enumerate(order):
        after_ok = i + 1 == len(order) or order[i + 1].step_min > m.step_max
        if (reach is None or reach < m.step_min) and after_ok:
            out.add(m.id)
        reach = m.step_max if reach is None else max(reach, m.step_max)
    return out


def _load(
    session: Session,
    *,
    run_id: str,
    name: str,
    series_id: int,
    start: int | None,
    end: int | None,
    cursor: int,
    budget: int,
    want_times: bool,
) -> _Loaded:
    """The series' points in [start, end] as of ``cursor``, deduplicated, sorted by step.

    Points come from the series' chunks and from its rows of blocks. On a coarse read
    (``DIGEST_BLOCK`` or more points per requested point) chunks that lie wholly inside the
    window, overlap no other piece and have a digest contribute their digest instead of their
    points: the extremes of every block survive, at 1/32 of the bytes.
    """
    metas = chunk_store.chunk_meta(
        session, series_id=series_id, start=start, end=end, cursor=cursor
    )
    slices = block_store.series_slices(
        session, run_id=run_id, name=name, series_id=series_id, cursor=cursor, start=start, end=end
    )
    pieces = metas + [
        chunk_store.ChunkMeta(
            s.id, s.seq, s.seq, int(s.steps[0]), int(s.steps[-1]), s.steps.size, False, False
        )
        for s in slices
    ]
    use_digest: list[chunk_store.ChunkMeta] = []
    if not want_times and sum(m.count for m in pieces) > budget * DIGEST_BLOCK:
        isolated = _isolated(pieces)
        use_digest = [
            m
            for m in metas
            if m.has_digest
            and m.id in isolated
            and m.seq <= cursor
            and (start is None or m.step_min >= start)
            and (end is None or m.step_max <= end)
        ]
        # Digests only where the points they stand for alone overflow the budget, so the answer
        # is "downsampled" whatever the other chunks hold.
        if sum(m.count for m in use_digest) <= 2 * budget:
            use_digest = []
    skip = {m.id for m in use_digest}
    data = chunk_store.chunk_data(
        session, ids=[m.id for m in metas if m.id not in skip], times=want_times
    )
    parts: list[tuple[int, int, Any, Any, Any]] = []
    for c in data:
        steps = np.frombuffer(c.steps, dtype=I64)
        values = np.frombuffer(c.values, dtype=F64)
        times = np.frombuffer(c.times, dtype=F64) if c.times is not None else None
        if c.seq > cursor:
            # A chunk compacted after the cursor was read: keep only what the cursor covers.
            keep = decode_origins(c.origins, seq=c.seq, count=steps.size) <= cursor
            steps, values = steps[keep], values[keep]
            times = times[keep] if times is not None else None
        parts.append((c.seq, c.id, steps, values, times))
    parts.extend((s.seq, s.id, s.steps, s.values, s.times if want_times else None) for s in slices)
    parts.sort(key=lambda p: (p[0], p[1]))  # ingest order: the later write of a step wins
    if parts:
        steps = np.concatenate([p[2] for p in parts])
        values = np.concatenate([p[3] for p in parts])
        if want_times:
            times_joined = np.concatenate([p[4] for p in parts])
            steps, values, times_all = dedupe_latest(steps, values, times_joined)
        else:
            steps, values = dedupe_latest(steps, values)
            times_all = None
    else:
        steps, values = np.empty(0, I64), np.empty(0, F64)
        times_all = np.empty(0, F64) if want_times else None
    lo = 0 if start is None else int(np.searchsorted(steps, start, "left"))
    hi = steps.size if end is None else int(np.searchsorted(steps, end, "right"))
    steps, values = steps[lo:hi], values[lo:hi]
    times_all = times_all[lo:hi] if times_all is not None else None
    total = int(steps.size)
    if use_digest:
        digests = chunk_store.chunk_digests(session, ids=[m.id for m in use_digest])
        total += sum(m.count for m in use_digest)
        steps = np.concatenate([steps, *(np.frombuffer(d[0], dtype=I64) for d in digests)])
        values = np.concatenate([values, *(np.frombuffer(d[1], dtype=F64) for d in digests)])
        order = np.argsort(steps, kind="stable")
        steps, values = steps[order], values[order]
    return _Loaded(steps, values, times_all, total)


def _check_window(start: int | None, end: int | None) -> None:
    if start is not None and end is not None and start > end:
        raise InvalidPayloadError(
            f"start ({start}) must not be greater than end ({end})",
            errors=[{"loc": ["query", "start"], "msg": "must not be greater than end"}],
        )


def _downsampled(
    session: Session,
    *,
    run_id: str,
    name: str,
    series_id: int,
    start: int | None,
    end: int | None,
    cursor: int,
    points: int,
    want_times: bool,
) -> tuple[_Loaded, NDArray[np.intp]]:
    """The window's points and the indices that a ``points`` budget keeps (extremes first)."""
    loaded = _load(
        session,
        run_id=run_id,
        name=name,
        series_id=series_id,
        start=start,
        end=end,
        cursor=cursor,
        budget=points,
        want_times=want_times,
    )
    return loaded, downsample(loaded.steps, loaded.values, points)


def _series_points(
    session: Session,
    *,
    run_id: str,
    name: str,
    start: int | None,
    end: int | None,
    points: int,
    wall_time: bool,
) -> dict[str, Any]:
    series = store.get_series(session, run_id=run_id, name=name)
    if series is None:
        raise SeriesNotFoundError(
            f"run {run_id!r} has no series {name!r}: GET /api/v1/runs/{run_id}/series lists them"
        )
    # The cursor is read first and bounds the points, so "after=cursor" resumes without a gap.
    cursor = store.run_seq(session, run_id=run_id)
    loaded, idx = _downsampled(
        session,
        run_id=run_id,
        name=name,
        series_id=series.id,
        start=start,
        end=end,
        cursor=cursor,
        points=points,
        want_times=wall_time,
    )
    return {
        "name": name,
        "step": loaded.steps[idx].tolist(),
        "value": json_values(loaded.values[idx]),
        "wall_time": json_values(loaded.times[idx]) if loaded.times is not None else None,
        "downsampled": bool(idx.size < loaded.total),
        "total": loaded.total,
        "cursor": cursor,
    }


def load_series(
    session: Session, *, run_id: str, name: str, series_id: int, cursor: int, points: int
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """A whole series downsampled to ``points`` with its extremes kept, as arrays."""
    loaded, idx = _downsampled(
        session,
        run_id=run_id,
        name=name,
        series_id=series_id,
        start=None,
        end=None,
        cursor=cursor,
        points=points,
        want_times=False,
    )
    return loaded.steps[idx], loaded.values[idx]


def read_points(
    db: Database,
    *,
    run_id: str,
    name: str,
    start: int | None,
    end: int | None,
    points: int,
    max_points: int,
    wall_time: bool = False,
) -> dict[str, Any]:
    """``SeriesPoints`` of a series in [start, end]: exact when the window fits the budget.

    Wall times cost a third of the bytes read and charts do not draw them: only on request.
    """
    check_budget(points, max_points=max_points)
    _check_window(start, end)
    with db.reader() as session:
        require_run(session, run_id)
        return _series_points(
            session,
            run_id=run_id,
            name=name,
            start=start,
            end=end,
            points=points,
            wall_time=wall_time,
        )


MAX_COMPARE_RUNS = 20


def read_compare(
    db: Database,
    *,
    run_ids: list[str],
    name: str,
    start: int | None,
    end: int | None,
    points: int,
    max_points: int,
) -> dict[str, Any]:
    """The same series of several runs, each like ``read_points``, in one request.

    A run without the series comes back with empty columns (a comparison shows what exists).
    """
    check_budget(points, max_points=max_points)
    _check_window(start, end)
    ids = list(dict.fromkeys(r for r in run_ids if r))
    if not 1 <= len(ids) <= MAX_COMPARE_RUNS:
        raise InvalidPayloadError(
            f"runs must name 1 to {MAX_COMPARE_RUNS} run ids separated by commas, got {len(ids)}",
            errors=[{"loc": ["query", "runs"], "msg": f"must name 1 to {MAX_COMPARE_RUNS} runs"}],
        )
    out = []
    with db.reader() as session:
        for run_id in ids:
            require_run(session, run_id)
            try:
                body = _series_points(
                    session,
                    run_id=run_id,
                    name=name,
                    start=start,
                    end=end,
                    points=points,
                    wall_time=False,
                )
            except SeriesNotFoundError:
                body = {
                    "name": name,
                    "step": [],
                    "value": [],
                    "wall_time": None,
                    "downsampled": False,
                    "total": 0,
                    "cursor": store.run_seq(session, run_id=run_id),
                }
            out.append({"run_id": run_id, **body})
    return {"name": name, "runs": out}


MAX_SPARKLINE_RUNS = 200  # a page of the runs table (services.runs.MAX_PAGE)
MAX_SPARKLINE_NAMES = 8
MAX_SPARKLINE_POINTS = 500


def read_sparklines(
    db: Database, *, run_ids: list[str], names: list[str], points: int
) -> dict[str, Any]:
    """For each run, the first of ``names`` it has, downsampled to ``points`` (extremes kept).

    One request for a whole page of the runs table. A run that does not exist, or has none of
    the names, comes back with ``name`` None and empty columns: the table shows what exists,
    and a run deleted while the page was open does not fail the others.
    """
    check_budget(points, max_points=MAX_SPARKLINE_POINTS)
    ids = list(dict.fromkeys(r for r in run_ids if r))
    if not 1 <= len(ids) <= MAX_SPARKLINE_RUNS:
        raise InvalidPayloadError(
            f"runs must name 1 to {MAX_SPARKLINE_RUNS} run ids separated by commas, got {len(ids)}",
            errors=[{"loc": ["query", "runs"], "msg": f"must name 1 to {MAX_SPARKLINE_RUNS} runs"}],
        )
    wanted = list(dict.fromkeys(n for n in names if n))
    if any(len(n) > 512 for n in wanted):
        raise InvalidPayloadError(
            "each name must be at most 512 characters",
            errors=[{"loc": ["query", "name"], "msg": "must be at most 512 characters"}],
        )
    if not 1 <= len(wanted) <= MAX_SPARKLINE_NAMES:
        raise InvalidPayloadError(
            f"name must be given 1 to {MAX_SPARKLINE_NAMES} times (the series to try, in "
            f"order), got {len(wanted)}",
            errors=[
                {"loc": ["query", "name"], "msg": f"must be given 1 to {MAX_SPARKLINE_NAMES} times"}
            ],
        )
    out: list[dict[str, Any]] = []
    with db.reader() as session:
        found = {r.id: r for r in (run_store.get_run(session, run_id) for run_id in ids) if r}
        by_run = run_store.series_with_points(session, list(found), wanted)
        for run_id in ids:
            present = by_run.get(run_id, {})
            name = next((n for n in wanted if n in present), None)
            if run_id not in found or name is None:
                out.append({"run_id": run_id, "name": None, "step": [], "value": [], "total": 0})
                continue
            loaded, idx = _downsampled(
                session,
                run_id=run_id,
                name=name,
                series_id=present[name],
                start=None,
                end=None,
                cursor=found[run_id].last_seq,
                points=points,
                want_times=False,
            )
            out.append(
                {
                    "run_id": run_id,
                    "name": name,
                    "step": loaded.steps[idx].tolist(),
                    "value": json_values(loaded.values[idx]),
                    "total": loaded.total,
                }
            )
    return {"names": wanted, "runs": out}


def read_histograms(
    db: Database, *, run_id: str, name: str, points: int, max_points: int
) -> dict[str, Any]:
    """``Histograms`` of one name, thinned to ``points`` histograms evenly over its steps."""
    check_budget(points, max_points=max_points)
    with db.reader() as session:
        require_run(session, run_id)
        steps = histogram_store.histogram_steps(session, run_id=run_id, name=name)
        if not steps:
            raise SeriesNotFoundError(
                f"run {run_id!r} has no histograms {name!r}: "
                f"GET /api/v1/runs/{run_id}/histograms/names lists them"
            )
        if len(steps) > points:
            pick = np.unique(np.linspace(0, len(steps) - 1, points).round().astype(np.intp))
            steps = [steps[i] for i in pick.tolist()]
        rows = histogram_store.histogram_rows(session, run_id=run_id, name=name, steps=steps)
    bins = max(r[1] for r in rows)
    counts: list[list[float]] = []
    for r in rows:
        row = np.frombuffer(r[4], dtype=F64).tolist()
        counts.append(row + [0.0] * (bins - len(row)))
    return {
        "name": name,
        "bins": bins,
        "step": [r[0] for r in rows],
        # Each histogram's own bins: a shorter row is padded to ``bins`` with zeros.
        "row_bins": [r[1] for r in rows],
        # SQLite stores NaN as NULL: an edge that was not finite comes back as "NaN".
        "lo": ["NaN" if r[2] is None else finite_or_token(r[2]) for r in rows],
        "hi": ["NaN" if r[3] is None else finite_or_token(r[3]) for r in rows],
        "counts": counts,
        "nonfinite": [r[5] for r in rows],
    }


def list_histograms(db: Database, *, run_id: str) -> list[str]:
    """Names of the run's histograms."""
    with db.reader() as session:
        require_run(session, run_id)
        return histogram_store.histogram_names(session, run_id=run_id)


__all__ = [
    "LayerGrid",
    "check_budget",
    "load_layer_grid",
    "load_series",
    "read_compare",
    "read_events",
    "read_heatmap",
    "read_histograms",
    "read_points",
    "read_sparklines",
    "list_histograms",
]
