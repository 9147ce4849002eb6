"""Summaries of the points series received in blocks: one packed record per series, per run.

A wide batch updates the records of all its blocks' members with a few array operations instead
of one ``UPDATE`` per series; the run's row is read and written once per batch. The run's row lock
(taken by ``next_seq``) serialises batches of a run, so the read-merge-write cannot interleave
with another batch of the same run.

Record fields: ``count`` 0 means no points; ``vmin``/``vmax`` NaN means no finite value;
``nonfinite`` ``NO_STEP`` means every value was finite. ``row_last`` is the last step held by the
series' own row (``NO_ROW``: none), so a block finds the members it re-logs a step of without
reading the series table.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import Table, bindparam, select
from sqlalchemy.orm import Session

from trickscope_server.storage.models import BlockSummaryRow
from trickscope_server.storage.transaction import WriteTransaction

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
        ("row_last", "<i8"),
    ]
)
NO_STEP = np.iinfo(np.int64).max
NO_ROW = np.iinfo(np.int64).min
# Up to this many series ids are looked up one by one (binary search) rather than with arrays.
_FEW = 16

_table = cast(Table, BlockSummaryRow.__table__)
_IN_CHUNK = 500  # run ids per IN list (see storage/runs.IN_CHUNK; imported there, so not here)
_t = _table.c


def family_of(name: str) -> str | None:
    """The family (statistic) a series name belongs to: its text before the first ``/``."""
    family, sep, rest = name.partition("/")
    return family if sep and family and rest else None


@dataclass
class RunSummaries:
    """The block summaries of one run's series, loaded once per batch and written back once.

    Records are kept sorted by series id, so a block's members find theirs with one
    ``searchsorted``.
    """

    run_id: str
    records: NDArray[Any]
    stored: bool = False  # the run has a row already
    dirty: bool = False

    def last_steps(self, low: int, *, of: Sequence[int] | None = None) -> dict[int, int]:
        """{series id: last step} of the series (all, or those ``of``) whose records reach
        ``low`` or above."""
        recs = self.records
        if of is not None and len(of) <= _FEW:  # a few logged series: no array work at all
            out = {}
            for sid in of:
                at = self._position(sid)
                if at is not None and recs["count"][at] > 0 and recs["last"][at] >= low:
                    out[sid] = int(recs["last"][at])
            return out
        hit = recs[(recs["count"] > 0) & (recs["last"] >= low)]
        return dict(zip(hit["id"].tolist(), hit["last"].tolist(), strict=True))

    def unknown(self, members: NDArray[np.int64]) -> NDArray[np.int64]:
        """The members that have no record yet."""
        known = self.records["id"]
        if not known.size:
            return members
        at = np.minimum(np.searchsorted(known, members), known.size - 1)
        return members[known[at] != members]

    def merge(
        self,
        members: NDArray[np.int64],
        steps: NDArray[np.int64],
        values: NDArray[np.float64],
        row_last: dict[int, int],
    ) -> NDArray[np.int64]:
        """Merge blocks over the same ``steps`` (strictly increasing; ``values``: members x
        steps, members of several blocks stacked) into the records; returns the members that
        re-log a stored step instead, to be recounted from their points (:meth:`recounted`).

        ``row_last``: the last step in the series row of members without a record yet.
        """
        recs = self._with_members(members, row_last)
        where = np.searchsorted(recs["id"], members)
        first = int(steps[0])
        stored = np.maximum(
            np.where(recs["count"][where] > 0, recs["last"][where], NO_ROW),
            recs["row_last"][where],
        )
        again = stored >= first
        if again.any():
            where, values = where[~again], values[~again]
        empty = recs["count"][where] == 0
        recs["first"][where] = np.where(empty, first, np.minimum(recs["first"][where], first))
        recs["count"][where] += steps.size
        # Not recounted: every new step lies after the series' stored ones.
        recs["last"][where] = int(steps[-1])
        recs["last_value"][where] = values[:, -1]
        finite = np.isfinite(values)
        if finite.all():  # the common case: nothing to mask, no first non-finite step to find
            low, high = values.min(axis=1), values.max(axis=1)
        else:
            with np.errstate(invalid="ignore"):
                low = np.where(finite, values, np.inf).min(axis=1)
                high = np.where(finite, values, -np.inf).max(axis=1)
            low[np.isinf(low)] = np.nan  # no finite value in the block
            high[np.isinf(high)] = np.nan
            bad = ~finite
            new_bad = np.where(bad.any(axis=1), steps[np.argmax(bad, axis=1)], NO_STEP)
            recs["nonfinite"][where] = np.minimum(recs["nonfinite"][where], new_bad)
        recs["vmin"][where] = np.fmin(recs["vmin"][where], low)
        recs["vmax"][where] = np.fmax(recs["vmax"][where], high)
        self.dirty = True
        return members[again]

    def rows_written(self, lasts: dict[int, int]) -> None:
        """Series that got points in their own rows ({id: last step}): later blocks must see
        those steps as stored."""
        if len(lasts) <= _FEW:  # the few logged series of a flush: no array work at all
            row_last = self.records["row_last"]
            for sid, last in lasts.items():
                at = self._position(sid)
                if at is not None:
                    row_last[at] = max(int(row_last[at]), last)
                    self.dirty = True
            return
        where, hit = self._find(lasts)
        if where.size:
            new = np.fromiter(lasts.values(), dtype=np.int64, count=len(lasts))[hit]
            self.records["row_last"][where] = np.maximum(self.records["row_last"][where], new)
            self.dirty = True

    def recounted(self, lasts: dict[int, int]) -> None:
        """Series recounted into their rows ({id: last step}): their records are emptied (the
        rows hold every point now)."""
        where, hit = self._find(lasts)
        if where.size:
            recs = self.records
            recs["count"][where] = 0
            recs["vmin"][where] = np.nan
            recs["vmax"][where] = np.nan
            recs["nonfinite"][where] = NO_STEP
            recs["row_last"][where] = np.fromiter(lasts.values(), dtype=np.int64)[hit]
            self.dirty = True

    def _position(self, series_id: int) -> int | None:
        """Where the series' record is (records are sorted by id), or None without one."""
        known = self.records["id"]
        at = bisect.bisect_left(known, series_id)
        return at if at < known.size and known[at] == series_id else None

    def _find(self, lasts: dict[int, int]) -> tuple[NDArray[np.intp], NDArray[np.bool_]]:
        known = self.records["id"]
        ids = np.fromiter(lasts, dtype=np.int64, count=len(lasts))
        if not known.size or not ids.size:
            return np.empty(0, np.intp), np.zeros(ids.size, bool)
        at = np.minimum(np.searchsorted(known, ids), known.size - 1)
        hit = known[at] == ids
        return at[hit], hit

    def _with_members(self, members: NDArray[np.int64], row_last: dict[int, int]) -> NDArray[Any]:
        new = self.unknown(members)
        if new.size:
            add = np.zeros(new.size, dtype=RECORD)
            add["id"] = new
            add["vmin"] = add["vmax"] = np.nan
            add["nonfinite"] = NO_STEP
            add["row_last"] = [row_last.get(sid, NO_ROW) for sid in new.tolist()]
            recs = np.concatenate([self.records, add])
            self.records = recs[np.argsort(recs["id"], kind="stable")]
        return self.records


def load(session: Session, *, run_id: str) -> RunSummaries:
    """The run's records (none yet: an empty set)."""
    raw = session.connection().execute(_LOAD, {"b_run": run_id}).scalar()
    if raw is None:
        return RunSummaries(run_id, np.zeros(0, dtype=RECORD))
    return RunSummaries(run_id, np.frombuffer(bytes(raw), dtype=RECORD).copy(), stored=True)


_LOAD = select(_t.records).where(_t.run_id == bindparam("b_run"))
# By dialect, in the driver's parameter style: (update, insert), both taking (records, run id).
_SAVE = {
    "sqlite": (
        "UPDATE block_summaries SET records = ? WHERE run_id = ?",
        "INSERT INTO block_summaries (records, run_id) VALUES (?, ?)",
    ),
    "postgresql": (
        "UPDATE block_summaries SET records = %s WHERE run_id = %s",
        "INSERT INTO block_summaries (records, run_id) VALUES (%s, %s)",
    ),
}


def save(tx: WriteTransaction, summaries: RunSummaries) -> None:
    """Write the records back, if a batch changed them (straight to the driver, see
    ``storage/transaction.py``)."""
    if not summaries.dirty:
        return
    update_sql, insert_sql = _SAVE[tx.dialect]
    values = (summaries.records.tobytes(), summaries.run_id)
    tx.execute(update_sql if summaries.stored else insert_sql, values)
    summaries.stored, summaries.dirty = True, False


def merged(fields: Mapping[str, Any], rec: Any) -> dict[str, Any]:
    """A series' summary ``fields`` (its row's ``count``, ``first_step``, ``last_step``,
    ``last_value``, ``min_value``, ``max_value``, ``first_nonfinite_step``) merged with its record.

    The two describe disjoint steps (a re-logged step recounts the series into its row), so the
    counts add and the later of the two last steps carries the last value.
    """
    count, first, last = int(rec["count"]), int(rec["first"]), int(rec["last"])
    nonfinite = None if int(rec["nonfinite"]) == NO_STEP else int(rec["nonfinite"])
    had = bool(fields["count"])
    later = not had or fields["last_step"] is None or last > fields["last_step"]
    return {
        "count": (fields["count"] or 0) + count,
        "first_step": first if not had else min(first, fields["first_step"]),
        "last_step": last if later else fields["last_step"],
        "last_value": float(rec["last_value"]) if later else fields["last_value"],
        "min_value": _either(min, fields["min_value"] if had else None, float(rec["vmin"])),
        "max_value": _either(max, fields["max_value"] if had else None, float(rec["vmax"])),
        "first_nonfinite_step": _either(
            min, fields["first_nonfinite_step"] if had else None, nonfinite
        ),
    }


def _either(pick: Callable[[Any, Any], Any], a: Any, b: Any) -> Any:
    """``pick`` of the two values that are present (None, or NaN for a float, is absent)."""
    a = None if a is None or (isinstance(a, float) and math.isnan(a)) else a
    b = None if b is None or (isinstance(b, float) and math.isnan(b)) else b
    if a is None or b is None:
        return b if a is None else a
    return pick(a, b)


def records_of_series(session: Session, wanted: Mapping[str, Collection[int]]) -> dict[int, Any]:
    """{series id: record} of the ``wanted`` series (run id -> series ids) that hold points from
    blocks; a wanted series without block points has no entry.

    Only the wanted records are decoded. SQLite hands each run's row over in process, viewed in
    place and searched with one ``searchsorted``; PostgreSQL finds each record where it lies
    (``position`` of the series id's bytes) and sends only that record, not the run's row.
    """
    if session.get_bind().dialect.name != "postgresql":
        return _searched(session, wanted)
    pairs = [(run_id, int(sid)) for run_id, ids in wanted.items() for sid in ids]
    out: dict[int, Any] = {}
    misread: set[str] = set()
    for start in range(0, len(pairs), _PAIRS_CHUNK):
        part = pairs[start : start + _PAIRS_CHUNK]
        params = {
            "b_runs": [run_id for run_id, _ in part],
            "b_sids": [sid for _, sid in part],
            "b_keys": [sid.to_bytes(8, "little", signed=True) for _, sid in part],
        }
        for run_id, sid, at, raw in session.connection().exec_driver_sql(_PG_FIND, params):
            if at and (at - 1) % RECORD.itemsize:
                misread.add(run_id)  # the id's bytes also occur inside an earlier record
            elif at:
                rec = np.frombuffer(raw, dtype=RECORD)[0]
                if rec["count"] > 0:
                    out[sid] = rec
    if misread:
        out.update(_searched(session, {run_id: wanted[run_id] for run_id in misread}))
    return out


_PAIRS_CHUNK = 1000
# The record of series ``sid`` starts with its id, little-endian: the first occurrence of those
# 8 bytes at a record boundary is it (a match inside a record is another field's bytes).
# PostgreSQL stores a run's records compressed, and each use of the column decompresses them
# again: ``OFFSET 0`` keeps the planner from copying ``position`` into both outer uses, so a
# record costs one whole decompression (and a prefix for ``substring``), not three.
_PG_FIND = (
    f"SELECT run_id, sid, at, substring(records FROM at FOR {RECORD.itemsize}) FROM ("
    "SELECT u.run_id, u.sid, b.records, position(u.key IN b.records) AS at "
    "FROM unnest(%(b_runs)s::text[], %(b_sids)s::bigint[], %(b_keys)s::bytea[]) "
    "AS u(run_id, sid, key) JOIN block_summaries AS b ON b.run_id = u.run_id OFFSET 0) AS found"
)


def _searched(session: Session, wanted: Mapping[str, Collection[int]]) -> dict[int, Any]:
    """:func:`records_of_series` from the runs' whole rows."""
    out: dict[int, Any] = {}
    runs = [run_id for run_id, ids in wanted.items() if ids]
    for start in range(0, len(runs), _IN_CHUNK):
        stmt = select(_t.run_id, _t.records).where(_t.run_id.in_(runs[start : start + _IN_CHUNK]))
        for run_id, raw in session.execute(stmt):
            recs = np.frombuffer(raw, dtype=RECORD)
            if not recs.size:
                continue
            ids = np.fromiter(wanted[run_id], dtype=np.int64)
            at = np.minimum(np.searchsorted(recs["id"], ids), recs.size - 1)
            found = recs[at]
            hit = (found["id"] == ids) & (found["count"] > 0)
            out.update(zip(ids[hit].tolist(), found[hit], strict=True))
    return out
