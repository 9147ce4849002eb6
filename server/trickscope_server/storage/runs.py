"""Queries on runs and on the series dictionary."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import and_, delete, or_, select
from sqlalchemy.orm import Session

from trickscope_server.storage.models import BatchRow, ChunkRow, RunRow, SeriesRow

# Keeps every IN list well under SQLite's bound-parameter limit and PostgreSQL's plan sizes.
IN_CHUNK = 500


def get_run(session: Session, run_id: str, *, for_update: bool = False) -> RunRow | None:
    """The run with this id, or None."""
    stmt = select(RunRow).where(RunRow.id == run_id)
    if for_update:
        stmt = stmt.with_for_update()
    return session.scalars(stmt).first()


def add_run(session: Session, row: RunRow) -> None:
    """Stage a new run."""
    session.add(row)


def list_runs(
    session: Session,
    *,
    project: str | None,
    status: str | None,
    before: tuple[float, str] | None,
    limit: int,
) -> list[RunRow]:
    """Runs newest first, strictly after the (created_at, id) position ``before``."""
    stmt = select(RunRow)
    if project is not None:
        stmt = stmt.where(RunRow.project == project)
    if status is not None:
        stmt = stmt.where(RunRow.status == status)
    if before is not None:
        created, run_id = before
        stmt = stmt.where(
            or_(
                RunRow.created_at < created,
                and_(RunRow.created_at == created, RunRow.id < run_id),
            )
        )
    stmt = stmt.order_by(RunRow.created_at.desc(), RunRow.id.desc()).limit(limit)
    return list(session.scalars(stmt))


def series_of_runs(session: Session, run_ids: Sequence[str]) -> list[SeriesRow]:
    """Every series (with its summary) of the given runs, ordered by run and name."""
    rows: list[SeriesRow] = []
    for start in range(0, len(run_ids), IN_CHUNK):
        part = list(run_ids[start : start + IN_CHUNK])
        stmt = (
            select(SeriesRow)
            .where(SeriesRow.run_id.in_(part))
            .order_by(SeriesRow.run_id, SeriesRow.name)
        )
        rows.extend(session.scalars(stmt))
    return rows


def delete_run(session: Session, run_id: str) -> bool:
    """Delete a run and everything it owns; False when there was no such run."""
    # Children first and explicitly: correct even where foreign keys are not enforced.
    session.execute(delete(ChunkRow).where(ChunkRow.run_id == run_id))
    session.execute(delete(BatchRow).where(BatchRow.run_id == run_id))
    session.execute(delete(SeriesRow).where(SeriesRow.run_id == run_id))
    result = session.execute(delete(RunRow).where(RunRow.id == run_id))
    return bool(getattr(result, "rowcount", 0))
