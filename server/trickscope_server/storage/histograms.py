"""Histograms: one row per (run, name, step), a re-logged one replaced."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from trickscope_server.storage.models import HistogramRow
from trickscope_server.storage.runs import IN_CHUNK

_h = cast(Table, HistogramRow.__table__).c


def upsert_histograms(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Insert histograms; a (run, name, step) already stored is replaced (the later write wins)."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    table = cast(Table, HistogramRow.__table__)
    base: Any = postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)
    stmt = base.on_conflict_do_update(
        index_elements=["run_id", "name", "step"],
        set_={
            col: base.excluded[col]
            for col in ("bins", "lo", "hi", "counts", "nonfinite", "wall_time")
        },
    )
    session.execute(stmt, list(rows))


def histogram_steps(session: Session, *, run_id: str, name: str) -> list[int]:
    """Steps of the run's histograms named ``name``, ascending."""
    stmt = select(_h.step).where(_h.run_id == run_id, _h.name == name).order_by(_h.step)
    return [int(s) for s in session.execute(stmt).scalars()]


def histogram_rows(
    session: Session, *, run_id: str, name: str, steps: Iterable[int]
) -> list[tuple[int, int, float | None, float | None, bytes, float]]:
    """(step, bins, lo, hi, counts, nonfinite) of the run's ``name`` histograms at ``steps``."""
    wanted = list(steps)
    out: list[tuple[int, int, float | None, float | None, bytes, float]] = []
    for start in range(0, len(wanted), IN_CHUNK):
        part = wanted[start : start + IN_CHUNK]
        stmt = select(_h.step, _h.bins, _h.lo, _h.hi, _h.counts, _h.nonfinite).where(
            _h.run_id == run_id, _h.name == name, _h.step.in_(part)
        )
        out.extend(
            (int(st), int(b), lo, hi, bytes(c), float(n))
            for st, b, lo, hi, c, n in session.execute(stmt)
        )
    out.sort(key=lambda r: r[0])
    return out


def histogram_names(session: Session, *, run_id: str) -> list[str]:
    """Distinct histogram names of the run."""
    stmt = select(_h.name).where(_h.run_id == run_id).distinct().order_by(_h.name)
    return [str(n) for n in session.execute(stmt).scalars()]
