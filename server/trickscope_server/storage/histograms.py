"""Histograms: one row per (run, name, step), a re-logged one replaced; and reads that merge
them with the histogram blocks (``storage/histogram_blocks.py``), where most of them are."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import cast

import numpy as np
from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from trickscope_server.storage import histogram_blocks as block_store
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
    """Steps of the run's histograms named ``name``, ascending, in either form."""
    stmt = select(_h.step).where(_h.run_id == run_id, _h.name == name)
    steps = {int(s) for s in session.execute(stmt).scalars()}
    rows = block_store.layer_rows(session, run_id=run_id, name=name)
    for raw in block_store.block_steps(session, run_id=run_id, layout_ids=rows):
        steps.update(np.frombuffer(raw, dtype="<i8").tolist())
    return sorted(steps)


HistogramRead = tuple[int, int, float | None, float | None, bytes, float]


def histogram_rows(
    session: Session, *, run_id: str, name: str, steps: Iterable[int]
) -> list[HistogramRead]:
    """(step, bins, lo, hi, counts, nonfinite) of the run's ``name`` histograms at ``steps``, in
    either form: a row is a later write than any block with its step, and of two blocks the
    later one wins."""
    wanted = sorted(set(steps))
    found: dict[int, HistogramRead] = {}
    layer_rows = block_store.layer_rows(session, run_id=run_id, name=name)
    if wanted and layer_rows:
        want = set(wanted)
        for cut in block_store.layer_slices(
            session, run_id=run_id, rows=layer_rows, low=wanted[0], high=wanted[-1]
        ):
            width = cut.bins * 8
            block_steps = np.frombuffer(cut.steps, dtype="<i8").tolist()
            lo, hi = np.frombuffer(cut.lo, "<f8").tolist(), np.frombuffer(cut.hi, "<f8").tolist()
            nonfinite = np.frombuffer(cut.nonfinite, "<f8").tolist()
            for j, step in enumerate(block_steps):
                if step in want:
                    counts = cut.counts[j * width : (j + 1) * width]
                    found[step] = (step, cut.bins, lo[j], hi[j], counts, nonfinite[j])
    for start in range(0, len(wanted), IN_CHUNK):
        part = wanted[start : start + IN_CHUNK]
        stmt = select(_h.step, _h.bins, _h.lo, _h.hi, _h.counts, _h.nonfinite).where(
            _h.run_id == run_id, _h.name == name, _h.step.in_(part)
        )
        for st, b, lo_edge, hi_edge, c, n in session.execute(stmt):
            found[int(st)] = (int(st), int(b), lo_edge, hi_edge, bytes(c), float(n))
    return [found[step] for step in sorted(found)]


def histogram_names(session: Session, *, run_id: str) -> list[str]:
    """Distinct histogram names of the run, in either form."""
    stmt = select(_h.name).where(_h.run_id == run_id).distinct()
    names = {str(n) for n in session.execute(stmt).scalars()}
    for _, family, layers in block_store.layouts(session, run_id=run_id):
        names.update(f"{family}/{layer}" for layer in layers)
    return sorted(names)
