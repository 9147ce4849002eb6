"""Series summaries kept at ingest: merged per batch, replaced after a recount.

A series' summary is its ``series`` row merged with the record of the points it received in
blocks (see ``storage/block_summaries.py``); :func:`series_with_summaries` reads the two merged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import BigInteger, Float, Table, bindparam, case, or_, select, update
from sqlalchemy.orm import Session

from trickscope_server.storage.chunks import (
    _CHUNK_COLUMNS,
    _PG_INSERT_CHUNKS,
    _SQLITE_INSERT_CHUNKS,
    _chunk_values,
    _pg_arrays,
    _unique_series,
    insert_chunks,
)
from trickscope_server.storage.models import SeriesRow
from trickscope_server.storage.runs import IN_CHUNK
from trickscope_server.storage.transaction import WriteTransaction

_series = cast(Table, SeriesRow.__table__)


# Every SET expression reads the row's values from before the update (standard SQL), so the
# summary merges atomically even when two workers ingest into one series.
_c = _series.c
_is_later = or_(_c.last_step.is_(None), bindparam("b_last", type_=BigInteger) >= _c.last_step)


def _lower(column: Any, param: str, type_: Any) -> Any:
    value = bindparam(param, type_=type_)
    return case((or_(column.is_(None), value < column), value), else_=column)


_UPDATE_SUMMARY = (
    update(_series)
    .where(_c.id == bindparam("b_id", type_=BigInteger))
    .values(
        count=_c.count + bindparam("b_count", type_=BigInteger),
        first_step=_lower(_c.first_step, "b_first", BigInteger),
        last_step=case((_is_later, bindparam("b_last", type_=BigInteger)), else_=_c.last_step),
        last_value=case((_is_later, bindparam("b_last_value", type_=Float)), else_=_c.last_value),
        min_value=_lower(_c.min_value, "b_min", Float),
        max_value=case(
            (
                or_(_c.max_value.is_(None), bindparam("b_max", type_=Float) > _c.max_value),
                bindparam("b_max", type_=Float),
            ),
            else_=_c.max_value,
        ),
        first_nonfinite_step=_lower(_c.first_nonfinite_step, "b_nonfinite", BigInteger),
        pending_chunks=_c.pending_chunks + 1,
    )
)


def _lower_sql(column: str, param: str) -> str:
    return f"CASE WHEN {column} IS NULL OR :{param} < {column} THEN :{param} ELSE {column} END"


# The same statement as _UPDATE_SUMMARY in SQLite's own syntax, for the driver's executemany.
_SQLITE_UPDATE_SUMMARY = (
    "UPDATE series SET count = count + :b_count, "
    f"first_step = {_lower_sql('first_step', 'b_first')}, "
    "last_step = CASE WHEN last_step IS NULL OR :b_last >= last_step "
    "THEN :b_last ELSE last_step END, "
    "last_value = CASE WHEN last_step IS NULL OR :b_last >= last_step "
    "THEN :b_last_value ELSE last_value END, "
    f"min_value = {_lower_sql('min_value', 'b_min')}, "
    "max_value = CASE WHEN max_value IS NULL OR :b_max > max_value "
    "THEN :b_max ELSE max_value END, "
    f"first_nonfinite_step = {_lower_sql('first_nonfinite_step', 'b_nonfinite')}, "
    "pending_chunks = pending_chunks + 1 "
    "WHERE id = :b_id"
)


def _pg_lower(column: str, param: str) -> str:
    return (
        f"CASE WHEN s.{column} IS NULL OR b.{param} < s.{column} THEN b.{param} ELSE s.{column} END"
    )


_SUMMARY_COLUMNS = (
    ("b_id", "bigint[]"),
    ("b_count", "bigint[]"),
    ("b_first", "bigint[]"),
    ("b_last", "bigint[]"),
    ("b_last_value", "float8[]"),
    ("b_min", "float8[]"),
    ("b_max", "float8[]"),
    ("b_nonfinite", "bigint[]"),
)
# The same merge as _UPDATE_SUMMARY over every series of a batch in one statement: the batch's
# summaries arrive as one array per column (SET expressions read the row from before the update).
_PG_UPDATE_SUMMARIES = (
    "UPDATE series AS s SET count = s.count + b.b_count, "
    f"first_step = {_pg_lower('first_step', 'b_first')}, "
    "last_step = CASE WHEN s.last_step IS NULL OR b.b_last >= s.last_step "
    "THEN b.b_last ELSE s.last_step END, "
    "last_value = CASE WHEN s.last_step IS NULL OR b.b_last >= s.last_step "
    "THEN b.b_last_value ELSE s.last_value END, "
    f"min_value = {_pg_lower('min_value', 'b_min')}, "
    "max_value = CASE WHEN s.max_value IS NULL OR b.b_max > s.max_value "
    "THEN b.b_max ELSE s.max_value END, "
    f"first_nonfinite_step = {_pg_lower('first_nonfinite_step', 'b_nonfinite')}, "
    "pending_chunks = s.pending_chunks + 1 "
    "FROM unnest({}) AS b({}) WHERE s.id = b.b_id".format(
        ", ".join(f"%({name})b::{kind}" for name, kind in _SUMMARY_COLUMNS),
        ", ".join(name for name, _ in _SUMMARY_COLUMNS),
    )
)


def update_summaries(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Merge per-batch summaries into the series rows (keys ``b_id``, ``b_count``, ...)."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        session.connection().exec_driver_sql(_SQLITE_UPDATE_SUMMARY, list(rows))
    elif dialect == "postgresql" and _unique_series(rows, "b_id"):
        names = [name for name, _ in _SUMMARY_COLUMNS]
        session.connection().exec_driver_sql(_PG_UPDATE_SUMMARIES, _pg_arrays(rows, names, ""))
    else:
        session.connection().execute(_UPDATE_SUMMARY, list(rows))


# PostgreSQL: a batch's chunk rows and its summary merges in one statement (one round trip).
_PG_CHUNKS_AND_SUMMARIES = f"WITH stored AS ({_PG_INSERT_CHUNKS}) {_PG_UPDATE_SUMMARIES}"


def store_series(
    tx: WriteTransaction, chunks: Sequence[dict[str, Any]], summaries: Sequence[dict[str, Any]]
) -> None:
    """Insert a batch's chunk rows (``storage/chunks.py``) and merge its summaries
    (:func:`update_summaries`): one statement on PostgreSQL when no series is named twice."""
    if not chunks:
        return
    if tx.dialect == "sqlite":
        tx.executemany(_SQLITE_INSERT_CHUNKS, [_chunk_values(row) for row in chunks])
        tx.executemany(_SQLITE_UPDATE_SUMMARY, summaries)
    elif tx.dialect == "postgresql" and _unique_series(chunks, "series_id"):
        arrays = _pg_arrays(chunks, _CHUNK_COLUMNS, "c_")
        arrays.update(_pg_arrays(summaries, [name for name, _ in _SUMMARY_COLUMNS], ""))
        tx.execute(_PG_CHUNKS_AND_SUMMARIES, arrays)
    else:
        insert_chunks(tx.session, chunks)
        update_summaries(tx.session, summaries)


def series_needing_compaction(
    session: Session, *, run_id: str, series_ids: Sequence[int], bound: int
) -> list[int]:
    """Those of ``series_ids`` (series of ``run_id``) with at least ``bound`` chunks stored since
    their last compaction.

    A few series are looked up by id; many by one query over the run's series (its index)
    rather than an ``IN`` list of a wide batch's thousands of ids, which cost more to bind than
    the rows cost to read.
    """
    if not series_ids:
        return []
    if len(series_ids) <= _FEW:
        stmt = select(_c.id).where(_c.id.in_(list(series_ids)), _c.pending_chunks >= bound)
        return [int(i) for i in session.execute(stmt).scalars()]
    wanted = set(series_ids)
    rows = session.connection().execute(_NEEDING_COMPACTION, {"b_run": run_id, "b_bound": bound})
    return [int(i) for i in rows.scalars() if i in wanted]


_NEEDING_COMPACTION = select(_c.id).where(
    _c.run_id == bindparam("b_run"), _c.pending_chunks >= bindparam("b_bound")
)


def reset_pending(session: Session, *, series_ids: Sequence[int]) -> None:
    """Reset these series' counts of chunks stored since compaction."""
    _update_pending(session, series_ids, 0)


def _update_pending(session: Session, series_ids: Sequence[int], value: Any) -> None:
    """Set ``pending_chunks`` to ``value`` (a number or an expression) for these series, one
    statement per ``IN_CHUNK`` of them."""
    for start in range(0, len(series_ids), IN_CHUNK):
        part = list(series_ids[start : start + IN_CHUNK])
        session.execute(update(_series).where(_c.id.in_(part)).values(pending_chunks=value))


def last_steps_from(
    session: Session, *, run_id: str, low: int, series_ids: Sequence[int]
) -> dict[int, int]:
    """{series id: last step} of those of ``series_ids`` (series of the run) whose last step is
    ``low`` or above: the only ones a batch whose steps start at ``low`` can overwrite a point of.

    A few series are looked up by id; many by one pass over the run's series, which costs less
    than binding thousands of ids.
    """
    if len(series_ids) <= _FEW:
        found = row_last_steps(session, series_ids=series_ids)
        return {sid: last for sid, last in found.items() if last >= low}
    stmt = select(_c.id, _c.last_step).where(
        _c.run_id == bindparam("b_run"), _c.last_step >= bindparam("b_low", type_=BigInteger)
    )
    rows = session.connection().execute(stmt, {"b_run": run_id, "b_low": low})
    return {int(i): int(last) for i, last in rows}


_FEW = 256


def row_states(
    session: Session, *, run_id: str, series_ids: Sequence[int]
) -> dict[int, tuple[int | None, int]]:
    """{series id: (last step of its row or None, chunks pending compaction)} of these series
    of the run (ingest's state of a run it has not written lately).

    A few series are looked up by id; many by one pass over the run's series.
    """
    if len(series_ids) <= _FEW:
        out: dict[int, tuple[int | None, int]] = {}
        for start in range(0, len(series_ids), IN_CHUNK):
            part = list(series_ids[start : start + IN_CHUNK])
            stmt = select(_c.id, _c.last_step, _c.pending_chunks).where(_c.id.in_(part))
            out.update(_row_state(row) for row in session.execute(stmt))
        return out
    rows = session.connection().execute(_RUN_ROW_STATES, {"b_run": run_id})
    wanted = set(series_ids)
    return dict(_row_state(row) for row in rows if row[0] in wanted)


def _row_state(row: Any) -> tuple[int, tuple[int | None, int]]:
    sid, last, pending = row
    return int(sid), (None if last is None else int(last), int(pending or 0))


_RUN_ROW_STATES = select(_c.id, _c.last_step, _c.pending_chunks).where(
    _c.run_id == bindparam("b_run")
)


def row_last_steps(session: Session, *, series_ids: Sequence[int]) -> dict[int, int]:
    """{series id: last step} of those of these series whose rows hold points."""
    out: dict[int, int] = {}
    for start in range(0, len(series_ids), IN_CHUNK):
        part = list(series_ids[start : start + IN_CHUNK])
        stmt = select(_c.id, _c.last_step).where(_c.id.in_(part), _c.last_step.is_not(None))
        out.update({int(i): int(last) for i, last in session.execute(stmt)})
    return out


_SET_SUMMARY = (
    update(_series)
    .where(_c.id == bindparam("b_id", type_=BigInteger))
    .values(
        count=bindparam("b_count", type_=BigInteger),
        first_step=bindparam("b_first", type_=BigInteger),
        last_step=bindparam("b_last", type_=BigInteger),
        last_value=bindparam("b_last_value", type_=Float),
        min_value=bindparam("b_min", type_=Float),
        max_value=bindparam("b_max", type_=Float),
        first_nonfinite_step=bindparam("b_nonfinite", type_=BigInteger),
    )
)


def set_summaries(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Replace series summaries (keys as :func:`update_summaries`'), e.g. after a recount."""
    if rows:
        session.connection().execute(_SET_SUMMARY, list(rows))


def add_pending(session: Session, *, series_ids: Sequence[int]) -> None:
    """Count one more chunk stored since compaction for each of these (distinct) series."""
    _update_pending(session, series_ids, _c.pending_chunks + 1)
