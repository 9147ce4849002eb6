"""Writes and reads of point chunks: a batch is a handful of executemany statements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    Float,
    bindparam,
    case,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from trickscope_server.storage.models import BatchRow, ChunkRow, RunRow, SeriesRow
from trickscope_server.storage.runs import IN_CHUNK

_series = SeriesRow.__table__
_chunks = ChunkRow.__table__


def _insert_ignore(session: Session, table: Any) -> Any:
    # INSERT ... ON CONFLICT DO NOTHING: concurrent workers may race on the same key, and the loser
    # must neither fail nor abort its transaction.
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    raise ValueError(f"unsupported database dialect {dialect!r}: use SQLite or PostgreSQL")


def record_batch(session: Session, *, run_id: str, batch_id: str, points: int, now: float) -> bool:
    """Record a batch id; False when the run already has it (the batch is a duplicate)."""
    # RETURNING rather than rowcount: psycopg reports -1 for this statement.
    stmt = (
        _insert_ignore(session, BatchRow.__table__)
        .values(run_id=run_id, batch_id=batch_id, points=points, received_at=now)
        .returning(BatchRow.__table__.c.batch_id)
    )
    return session.execute(stmt).first() is not None


def ensure_series(session: Session, *, run_id: str, names: Sequence[str]) -> dict[str, int]:
    """Ids of the run's series with these names, creating the missing ones."""
    ids: dict[str, int] = {}
    unique = list(dict.fromkeys(names))
    for start in range(0, len(unique), IN_CHUNK):
        part = unique[start : start + IN_CHUNK]
        found = session.execute(
            select(SeriesRow.name, SeriesRow.id).where(
                SeriesRow.run_id == run_id, SeriesRow.name.in_(part)
            )
        )
        ids.update({name: sid for name, sid in found})
        missing = [name for name in part if name not in ids]
        if missing:
            session.execute(
                _insert_ignore(session, _series),
                [{"run_id": run_id, "name": name, "count": 0} for name in missing],
            )
            created = session.execute(
                select(SeriesRow.name, SeriesRow.id).where(
                    SeriesRow.run_id == run_id, SeriesRow.name.in_(missing)
                )
            )
            ids.update({name: sid for name, sid in created})
    return ids


def insert_chunks(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Insert chunk rows (keys are the ``chunks`` columns) in one executemany."""
    if rows:
        session.execute(insert(_chunks), list(rows))


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
    )
)


def update_summaries(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Merge per-batch summaries into the series rows (keys ``b_id``, ``b_count``, ...)."""
    if rows:
        session.connection().execute(_UPDATE_SUMMARY, list(rows))


def touch_run(session: Session, *, run_id: str, now: float) -> None:
    """Record activity on a run."""
    session.execute(update(RunRow).where(RunRow.id == run_id).values(updated_at=now))


def get_series(session: Session, *, run_id: str, name: str) -> SeriesRow | None:
    """The run's series with this name, or None."""
    return session.scalars(
        select(SeriesRow).where(SeriesRow.run_id == run_id, SeriesRow.name == name)
    ).first()


def max_chunk_id(session: Session, *, run_id: str) -> int:
    """The run's ingest sequence: the id of its newest chunk, 0 when it has none."""
    value = session.scalar(select(func.max(ChunkRow.id)).where(ChunkRow.run_id == run_id))
    return int(value or 0)


def series_chunks(
    session: Session,
    *,
    series_id: int,
    start: int | None,
    end: int | None,
    max_id: int,
) -> list[tuple[bytes, bytes, bytes]]:
    """(steps, values, times) of a series' chunks overlapping [start, end], in ingest order."""
    stmt = select(ChunkRow.steps, ChunkRow.values, ChunkRow.times).where(
        ChunkRow.series_id == series_id, ChunkRow.id <= max_id
    )
    if start is not None:
        stmt = stmt.where(ChunkRow.step_max >= start)
    if end is not None:
        stmt = stmt.where(ChunkRow.step_min <= end)
    rows = session.execute(stmt.order_by(ChunkRow.id))
    return [(bytes(s), bytes(v), bytes(t)) for s, v, t in rows]


def prefixed_chunks(
    session: Session, *, run_id: str, prefix: str
) -> list[tuple[str, bytes, bytes]]:
    """(series name, steps, values) of every chunk of the run's series named ``prefix...``."""
    stmt = (
        select(SeriesRow.name, ChunkRow.steps, ChunkRow.values)
        .join(ChunkRow, ChunkRow.series_id == SeriesRow.id)
        .where(SeriesRow.run_id == run_id, SeriesRow.name.startswith(prefix, autoescape=True))
        .order_by(ChunkRow.id)
    )
    return [(name, bytes(s), bytes(v)) for name, s, v in session.execute(stmt)]


def chunks_after(
    session: Session, *, run_id: str, after: int, limit: int
) -> list[tuple[int, str, bytes, bytes]]:
    """(chunk id, series name, steps, values) of the run's chunks with id > ``after``."""
    stmt = (
        select(ChunkRow.id, SeriesRow.name, ChunkRow.steps, ChunkRow.values)
        .join(SeriesRow, SeriesRow.id == ChunkRow.series_id)
        .where(ChunkRow.run_id == run_id, ChunkRow.id > after)
        .order_by(ChunkRow.id)
        .limit(limit)
    )
    return [(int(i), name, bytes(s), bytes(v)) for i, name, s, v in session.execute(stmt)]
