"""Series summaries that hold when a step is logged again (the later write wins).

Ingest merges each batch into its series' summary (count, extremes, last value) without reading
stored points: exact as long as every step is new. A batch that re-logs a step already stored
(a resumed run, a re-sent range), or repeats a step within itself, would count the overwritten
point and keep its value in the extremes; those series are summarised again from their points,
in the batch's transaction, so the summary always describes the points a read returns.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy.orm import Session

from trickscope_server.downsample import dedupe_latest
from trickscope_server.services._convert import F64, I64
from trickscope_server.storage import points as store


def overlapping(
    session: Session,
    *,
    run_id: str,
    steps: list[NDArray[np.int64]],
    series_ids: list[int],
) -> list[int]:
    """Ids of the series whose new steps (``steps[i]`` for ``series_ids[i]``) overwrite a stored
    point or repeat within the batch; call before the batch's summaries are merged.

    A series named twice in one batch is among them: its two columns may share a step, and each
    column's summary is merged as if its steps were new.
    """
    if not steps:
        return []
    firsts, repeats = _firsts_and_repeats(steps)
    stored = store.last_steps_from(session, run_id=run_id, low=min(firsts))
    named_twice = len(set(series_ids)) < len(series_ids)
    out: dict[int, None] = {}
    seen: set[int] = set()
    for sid, first, repeat in zip(series_ids, firsts, repeats, strict=True):
        last = stored.get(sid)
        if repeat or (last is not None and first <= last) or (named_twice and sid in seen):
            out[sid] = None
        seen.add(sid)
    return list(out)


def _firsts_and_repeats(steps: list[NDArray[np.int64]]) -> tuple[list[int], list[bool]]:
    """Each column's lowest step, and whether it holds a step twice (vectorised over columns)."""
    sizes = np.fromiter((s.size for s in steps), dtype=np.intp, count=len(steps))
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    joined = np.concatenate(steps)
    firsts = np.minimum.reduceat(joined, starts).tolist()
    back = np.zeros(joined.size, dtype=bool)
    back[1:] = joined[1:] <= joined[:-1]
    back[starts] = False  # a column's first step follows no step of its own
    unordered = np.logical_or.reduceat(back, starts).tolist()
    repeats = [
        bool(u) and np.unique(s).size < s.size for u, s in zip(unordered, steps, strict=True)
    ]
    return firsts, repeats


def resummarise(session: Session, series_ids: list[int]) -> None:
    """Recompute these series' summaries from their stored points (later write wins)."""
    rows = [_summary(session, sid) for sid in series_ids]
    store.set_summaries(session, [row for row in rows if row is not None])


def _summary(session: Session, series_id: int) -> dict[str, Any] | None:
    chunks = store.series_chunk_data(session, series_id=series_id)
    if not chunks:
        return None
    steps = np.frombuffer(b"".join(c.steps for c in chunks), dtype=I64)
    values = np.frombuffer(b"".join(c.values for c in chunks), dtype=F64)
    steps, values = dedupe_latest(steps, values)
    finite = np.isfinite(values)
    nonfinite_steps = steps[~finite]
    return {
        "b_id": series_id,
        "b_count": int(steps.size),
        "b_first": int(steps[0]),
        "b_last": int(steps[-1]),
        "b_last_value": float(values[-1]),
        "b_min": float(values[finite].min()) if finite.any() else None,
        "b_max": float(values[finite].max()) if finite.any() else None,
        "b_nonfinite": int(nonfinite_steps[0]) if nonfinite_steps.size else None,
    }
