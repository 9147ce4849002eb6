"""Series summaries that hold when a step is logged again (the later write wins).

Ingest merges each batch into its series' summary (count, extremes, last value) without reading
stored points: exact as long as every step is new. A batch that re-logs a step already stored
(a resumed run, a re-sent range), or repeats a step within itself, would count the overwritten
point and keep its value in the extremes; those series are summarised again from their points,
in the batch's transaction, so the summary always describes the points a read returns.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy.orm import Session

from trickscope_server.services._series_read import series_columns
from trickscope_server.storage import blocks as block_store
from trickscope_server.storage import chunks as chunk_store
from trickscope_server.storage import summaries as summary_store
from trickscope_server.storage.block_summaries import RunSummaries, family_of
from trickscope_server.storage.transaction import WriteTransaction

# A batch of at most this many points is looked at in plain Python: numpy's cost per call, not
# per point, is what the few logged scalars of a flush pay (on a server woken every 0.5 s, the
# per-call cost is far above a warm loop's).
PLAIN_POINTS = 256


def overlapping(
    tx: WriteTransaction,
    *,
    run_id: str,
    steps: list[NDArray[np.int64]],
    series_ids: list[int],
    families: RunSummaries,
    row_last: Mapping[int, int | None] | None = None,
) -> list[int]:
    """Ids of the series whose new steps (``steps[i]`` for ``series_ids[i]``) overwrite a stored
    point or repeat within the batch; call before the batch's summaries are merged.

    ``row_last``: the last step of each series' own row (None: no points), when the caller knows
    them all; otherwise they are read.

    A series named twice in one batch is among them: its two columns may share a step, and each
    column's summary is merged as if its steps were new.
    """
    if not steps:
        return []
    firsts, repeats = _firsts_and_repeats(steps)
    low = min(firsts)
    # The last stored step of a series is the later of its row's and its block record's.
    if row_last is None:
        stored = summary_store.last_steps_from(
            tx.session, run_id=run_id, low=low, series_ids=series_ids
        )
    else:
        stored = {}
        for sid in series_ids:
            last = row_last[sid]
            if last is not None and last >= low:
                stored[sid] = last
    for sid, last in families.last_steps(low, of=series_ids).items():
        stored[sid] = max(last, stored.get(sid, last))
    named_twice = len(set(series_ids)) < len(series_ids)
    out: dict[int, None] = {}
    seen: set[int] = set()
    behind: dict[int, NDArray[np.int64]] = {}  # reach back among the row's own points only
    for sid, column, first, repeat in zip(series_ids, steps, firsts, repeats, strict=True):
        last = stored.get(sid)
        if repeat or (named_twice and sid in seen):
            out[sid] = None
        elif last is not None and first <= last:
            behind[sid] = column
        seen.add(sid)
    if behind:
        out.update(dict.fromkeys(_overwritten(tx.session, behind, families)))
    return list(out)


def _overwritten(
    session: Session, behind: dict[int, NDArray[np.int64]], families: RunSummaries
) -> list[int]:
    """Those of the series whose new steps reach back into their stored ones that log a stored
    step again. Two cadences arrive out of order as a rule (``watch`` sends a due step's
    ``grad_norm/total`` seconds after the logged scalars of the steps past it): steps that are
    new, only earlier, merge exactly and need no recount, which would read the series' whole
    history. Stored steps are looked up in the series' own chunks; a series that ever had points
    in blocks (it has a block record) is recounted as before."""
    ids = np.fromiter(behind, dtype=np.int64, count=len(behind))
    in_rows_only = set(families.unknown(ids).tolist())
    out = [sid for sid in behind if sid not in in_rows_only]
    checked = [sid for sid in behind if sid in in_rows_only]
    if checked:
        low = min(int(behind[sid].min()) for sid in checked)
        stored = chunk_store.steps_from(session, series_ids=checked, low=low)
        for sid in checked:
            new = behind[sid]
            if any(
                np.isin(new, np.frombuffer(raw, dtype="<i8")).any() for raw in stored.get(sid, [])
            ):
                out.append(sid)
    return out


def _firsts_and_repeats(steps: list[NDArray[np.int64]]) -> tuple[list[int], list[bool]]:
    """Each column's lowest step, and whether it holds a step twice (vectorised over columns,
    or in plain Python for a few points)."""
    if sum(column.size for column in steps) <= PLAIN_POINTS:
        columns = [column.tolist() for column in steps]
        firsts = [min(column) for column in columns]
        return firsts, [len(set(column)) < len(column) for column in columns]
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


def resummarise(
    session: Session, *, run_id: str, series: dict[int, str], families: RunSummaries
) -> dict[int, int]:
    """Recompute these series' summaries ({id: name}) from their stored points (later write
    wins) into their rows, and empty their block records (the rows now hold everything); returns
    {id: last step} of the rows written."""
    rows = []
    blocks: dict[str, list[block_store.Block]] = {}
    for sid, name in series.items():
        family = family_of(name)
        if family is not None and family not in blocks:
            blocks[family] = block_store.family_blocks(session, run_id=run_id, family=family)
        steps, values, _ = series_columns(
            session,
            run_id=run_id,
            series_id=sid,
            name=name,
            blocks=blocks[family] if family is not None else [],
        )
        if steps.size:
            rows.append(_summary(sid, steps, values))
    summary_store.set_summaries(session, rows)
    lasts = {row["b_id"]: row["b_last"] for row in rows}
    families.recounted(lasts)
    return lasts


def _summary(
    series_id: int, steps: NDArray[np.int64], values: NDArray[np.float64]
) -> dict[str, Any]:
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
