"""Histograms: one row per (run, name, step), a re-logged one replaced."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import cast

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from trickscope_server.storage.models import HistogramRow
from trickscope_server.storage.runs import IN_CHUNK

_h = cast(Table, HistogramRow.__table__).c

# One histogram row's values: run_id, name, step, bins, lo, hi, counts, nonfinite, wall_time.
HistogramValues = tuple[str, str, int, int, float, float, bytes, float, float]


_COLUMNS = ("run_id", "name", "step", "bins", "lo", "hi", "counts", "nonfinite", "wall_time")
_REPLACED = ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS[3:])
_SQLITE_UPSERT = (
    f"INSERT INTO histograms ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)}) "
    f"ON CONFLICT (run_id, name, step) DO UPDATE SET {_REPLACED}"
)
# PostgreSQL: every row in one statement, one array per column (binary, as for chunks); the
# rows must name each (run, name, step) once, as ``ON CONFLICT`` cannot touch a row twice.
_PG_TYPES = ("text", "text", "bigint", "integer", "float8", "float8", "bytea", "float8", "float8")
_PG_UPSERT = (
    f"INSERT INTO histograms ({', '.join(_COLUMNS)}) SELECT * FROM unnest("
    + ", ".join(f"%(h_{c})b::{t}[]" for c, t in zip(_COLUMNS, _PG_TYPES, strict=True))
    + f") ON CONFLICT (run_id, name, step) DO UPDATE SET {_REPLACED}"
)


def upsert_histograms(session: Session, rows: Sequence[HistogramValues]) -> None:
    """Insert histograms, each (run, name, step) once; one already stored is replaced (the later
    write wins). ``rows`` hold a row's values in :data:`HistogramValues` order."""
    if not rows:
        return
    connection = session.connection()
    if session.get_bind().dialect.name == "postgresql":
        columns = zip(*rows, strict=True)
        connection.exec_driver_sql(
            _PG_UPSERT, {f"h_{c}": list(v) for c, v in zip(_COLUMNS, columns, strict=True)}
        )
    else:
        # Straight to SQLite's driver: SQLAlchemy's per-value processing was a third of it.
        connection.exec_driver_sql(_SQLITE_UPSERT, list(rows))


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
