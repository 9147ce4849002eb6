"""Summaries of the points series received in blocks: one packed record per series, per family.

A block of a wide batch updates its family's records with a few array operations over all its
members instead of one ``UPDATE`` per series; the family's row is read and written once per batch.
The run's row lock (taken by ``next_seq``) serialises batches of a run, so the read-merge-write
cannot interleave with another batch of the same run.

Record fields: ``count`` 0 means no points; ``vmin``/``vmax`` NaN means no finite value;
``nonfinite`` ``NO_STEP`` means every value was finite.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.orm import Session

from trickscope_server.storage.models import BlockSummaryRow

RECORD = np.dtype(
    [
        ("id", "<i8"),
        ("count", "<i8"),
        ("first", "<i8"),
        ("last", "<i8"),
        ("last_value", "<f8"),
        ("vmin", "<f8"),
        ("vmax", "<f8"),
        ("nonfinite", "<i8"),
    ]
)
NO_STEP = np.iinfo(np.int64).max

_table = cast(Table, BlockSummaryRow.__table__)
_t = _table.c


def family_of(name: str) -> str | None:
    """The family (statistic) a series name belongs to: its text before the first ``/``."""
    family, sep, rest = name.partition("/")
    return family if sep and family and rest else None


@dataclass
class FamilySummaries:
    """The block summaries of one run, loaded once per batch and written back once.

    Records of a family are kept sorted by series id, so a block's members find their records
    with one ``searchsorted``.
    """

    run_id: str
    records: dict[str, NDArray[Any]] = field(default_factory=dict)
    stored: set[str] = field(default_factory=set)  # families that have a row already
    dirty: set[str] = field(default_factory=set)
    added_blocks: dict[str, int] = field(default_factory=dict)
    pending: dict[str, int] = field(default_factory=dict)  # as stored, plus what save() added

    def due(self, bound: int) -> list[str]:
        """Families with at least ``bound`` blocks stored since their last compaction."""
        return [f for f, n in self.pending.items() if n >= bound and self.records[f].size]

    def last_steps(self, low: int) -> dict[int, int]:
        """{series id: last step} of the series whose block records reach ``low`` or above."""
        out: dict[int, int] = {}
        for recs in self.records.values():
            hit = recs[(recs["count"] > 0) & (recs["last"] >= low)]
            out.update(zip(hit["id"].tolist(), hit["last"].tolist(), strict=True))
        return out

    def merge_block(
        self,
        family: str,
        members: NDArray[np.int64],
        steps: NDArray[np.int64],
        values: NDArray[np.float64],
        recount: set[int],
    ) -> None:
        """Merge a block (``values``: members x steps, ``steps`` strictly increasing) into the
        family's records, except for the members in ``recount`` (summarised from their points)."""
        recs = self._with_members(family, members)
        where = np.searchsorted(recs["id"], members)
        keep = np.ones(members.size, dtype=bool)
        if recount:
            keep = ~np.isin(members, np.fromiter(recount, dtype=np.int64, count=len(recount)))
        where, block = where[keep], values[keep]
        finite = np.isfinite(block)
        empty = recs["count"][where] == 0
        first = int(steps[0])
        recs["first"][where] = np.where(empty, first, np.minimum(recs["first"][where], first))
        recs["count"][where] += steps.size
        # Not recounted: every new step lies after the series' stored ones.
        recs["last"][where] = int(steps[-1])
        recs["last_value"][where] = block[:, -1]
        with np.errstate(invalid="ignore"):
            low = np.where(finite, block, np.inf).min(axis=1)
            high = np.where(finite, block, -np.inf).max(axis=1)
        low[np.isinf(low)] = np.nan  # no finite value in the block
        high[np.isinf(high)] = np.nan
        recs["vmin"][where] = np.fmin(recs["vmin"][where], low)
        recs["vmax"][where] = np.fmax(recs["vmax"][where], high)
        bad = ~finite
        has_bad = bad.any(axis=1)
        new_bad = np.where(has_bad, steps[np.argmax(bad, axis=1)], NO_STEP)
        recs["nonfinite"][where] = np.minimum(recs["nonfinite"][where], new_bad)
        self.dirty.add(family)
        self.added_blocks[family] = self.added_blocks.get(family, 0) + 1

    def clear(self, family: str, ids: Iterable[int]) -> None:
        """Empty the records of these series (their summary now lives in their series row)."""
        recs = self.records.get(family)
        if recs is None:
            return
        wanted = np.fromiter(ids, dtype=np.int64)
        hit = np.isin(recs["id"], wanted) & (recs["count"] > 0)
        if hit.any():
            recs["count"][hit] = 0
            recs["vmin"][hit] = np.nan
            recs["vmax"][hit] = np.nan
            recs["nonfinite"][hit] = NO_STEP
            self.dirty.add(family)

    def _with_members(self, family: str, members: NDArray[np.int64]) -> NDArray[Any]:
        recs = self.records.get(family)
        if recs is None:
            recs = np.zeros(0, dtype=RECORD)
        known = recs["id"]
        new = np.setdiff1d(members, known, assume_unique=False)
        if new.size:
            add = np.zeros(new.size, dtype=RECORD)
            add["id"] = new
            add["vmin"] = add["vmax"] = np.nan
            add["nonfinite"] = NO_STEP
            recs = np.concatenate([recs, add])
            recs = recs[np.argsort(recs["id"], kind="stable")]
        self.records[family] = recs
        return recs


def load(session: Session, *, run_id: str) -> FamilySummaries:
    """Every family's records of the run."""
    out = FamilySummaries(run_id)
    rows = session.connection().execute(_LOAD, {"b_run": run_id})
    for family, raw, pending in rows:
        out.records[str(family)] = np.frombuffer(bytes(raw), dtype=RECORD).copy()
        out.stored.add(str(family))
        out.pending[str(family)] = int(pending)
    return out


_LOAD = select(_t.family, _t.records, _t.pending).where(_t.run_id == bindparam("b_run"))
_UPDATE = (
    update(_table)
    .where(_t.run_id == bindparam("b_run"), _t.family == bindparam("b_family"))
    .values(records=bindparam("b_records"), pending=_t.pending + bindparam("b_added"))
)


def save(session: Session, summaries: FamilySummaries) -> None:
    """Write back the families a batch changed; ``pending`` grows by the blocks it added."""
    updates, inserts = [], []
    for family in sorted(summaries.dirty):
        raw = summaries.records[family].tobytes()
        added = summaries.added_blocks.get(family, 0)
        summaries.pending[family] = summaries.pending.get(family, 0) + added
        if family in summaries.stored:
            updates.append(
                {"b_run": summaries.run_id, "b_family": family, "b_records": raw, "b_added": added}
            )
        else:
            inserts.append(
                {"run_id": summaries.run_id, "family": family, "records": raw, "pending": added}
            )
    connection = session.connection()
    if updates:
        connection.execute(_UPDATE, updates)
    if inserts:
        connection.execute(insert(_table), inserts)
    summaries.stored.update(summaries.dirty)
    summaries.dirty.clear()
    summaries.added_blocks.clear()


def due_families(session: Session, *, run_id: str, bound: int) -> list[str]:
    """Families of the run with at least ``bound`` blocks stored since their last compaction."""
    stmt = select(_t.family).where(_t.run_id == run_id, _t.pending >= bound)
    return [str(f) for f in session.execute(stmt).scalars()]


def take_pending(session: Session, *, run_id: str, family: str, blocks: int) -> None:
    """Count ``blocks`` of the family as compacted."""
    session.execute(
        update(_table)
        .where(_t.run_id == run_id, _t.family == family)
        .values(pending=_t.pending - blocks)
    )


def records_of_runs(session: Session, run_ids: Sequence[str]) -> dict[int, Any]:
    """{series id: record} of the series of these runs that received points in blocks."""
    out: dict[int, Any] = {}
    if not run_ids:
        return out
    stmt = select(_t.records).where(_t.run_id.in_(list(run_ids)))
    for (raw,) in session.execute(stmt):
        recs = np.frombuffer(bytes(raw), dtype=RECORD)
        for rec in recs[recs["count"] > 0]:
            out[int(rec["id"])] = rec
    return out
