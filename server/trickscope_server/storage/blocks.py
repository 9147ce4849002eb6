"""Blocks: one row per (run, statistic, batch) holding a members x steps matrix of points.

A wide batch of per-layer statistics (thousands of series sharing one steps column) costs a
handful of rows here where per-series chunks cost one row each. Reads take one series' row out of
each block (``series_slices``) or whole blocks (the heatmap, live resume, compaction).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import Table, bindparam, delete, func, select
from sqlalchemy.orm import Session

from trickscope_server.storage.models import BlockRow, SeriesRow
from trickscope_server.storage.runs import IN_CHUNK
from trickscope_server.storage.transaction import WriteTransaction

I64 = np.dtype("<i8")
F64 = np.dtype("<f8")

_blocks = cast(Table, BlockRow.__table__)
_b = _blocks.c
_s = cast(Table, SeriesRow.__table__).c


def insert_blocks(tx: WriteTransaction, rows: Sequence[dict[str, Any]]) -> None:
    """Insert block rows (keys are the ``blocks`` columns but ``id``), straight to the driver
    (``storage/transaction.py``).

    PostgreSQL gets one statement of column arrays (one round trip, where an executemany sends
    each row); SQLite's executemany is already in process.
    """
    if not rows:
        return
    if tx.dialect == "postgresql":
        tx.execute(_PG_INSERT, {f"c_{c}": [row[c] for row in rows] for c in _INSERTED})
    else:
        tx.executemany(_SQLITE_INSERT, [tuple(row[c] for c in _INSERTED) for row in rows])


# The inserted columns, in both statements' order, with their PostgreSQL array types: there each
# column is bound as one array (in binary, as in storage/chunks.py) and unnested, one statement
# and one parameter per column.
_INSERTED = {
    "run_id": "text[]",
    "family": "text[]",
    "seq": "bigint[]",
    "step_min": "bigint[]",
    "step_max": "bigint[]",
    "steps_count": "integer[]",
    "members": "bytea[]",
    "steps": "bytea[]",
    "times": "bytea[]",
    "values": "bytea[]",
}
_PG_INSERT = "INSERT INTO blocks ({}) SELECT * FROM unnest({})".format(
    ", ".join(f'"{c}"' for c in _INSERTED),
    ", ".join(f"%(c_{c})b::{kind}" for c, kind in _INSERTED.items()),
)

_SQLITE_INSERT = "INSERT INTO blocks ({}) VALUES ({})".format(
    ", ".join(f'"{c}"' for c in _INSERTED), ", ".join("?" for _ in _INSERTED)
)


@dataclass(frozen=True)
class Block:
    """A stored block with its columns as arrays (``values``: members x steps)."""

    id: int
    family: str
    seq: int
    members: NDArray[np.int64]
    steps: NDArray[np.int64]
    times: NDArray[np.float64]
    values: NDArray[np.float64]


def _block(row: Any) -> Block:
    i, family, seq, members, steps, times, values = row
    ids = np.frombuffer(bytes(members), dtype=I64)
    step_array = np.frombuffer(bytes(steps), dtype=I64)
    matrix = np.frombuffer(bytes(values), dtype=F64).reshape(ids.size, step_array.size)
    return Block(
        int(i), str(family), int(seq), ids, step_array, np.frombuffer(bytes(times), F64), matrix
    )


_COLUMNS = (_b.id, _b.family, _b.seq, _b.members, _b.steps, _b.times, _b["values"])


def family_blocks(
    session: Session,
    *,
    run_id: str,
    family: str,
    cursor: int | None = None,
    start: int | None = None,
    end: int | None = None,
) -> list[Block]:
    """The family's blocks (at or below ``cursor``, overlapping [start, end]), in ingest order."""
    stmt = select(*_COLUMNS).where(_b.run_id == run_id, _b.family == family)
    if cursor is not None:
        stmt = stmt.where(_b.seq <= cursor)
    if start is not None:
        stmt = stmt.where(_b.step_max >= start)
    if end is not None:
        stmt = stmt.where(_b.step_min <= end)
    return [_block(row) for row in session.execute(stmt.order_by(_b.seq, _b.id))]


@dataclass(frozen=True)
class Slice:
    """One series' points out of one block; ``id`` is the block's id, negated, so slices and
    chunks share one ordering key (sequence, id) without colliding."""

    id: int
    seq: int
    steps: NDArray[np.int64]
    values: NDArray[np.float64]
    times: NDArray[np.float64]


def slices_of(blocks: Sequence[Block], series_id: int) -> list[Slice]:
    """The series' rows of these blocks (blocks without it contribute nothing)."""
    out = []
    for block in blocks:
        hit = np.flatnonzero(block.members == series_id)
        if hit.size:
            row = int(hit[0])
            out.append(Slice(-block.id, block.seq, block.steps, block.values[row], block.times))
    return out


def series_slices(
    session: Session,
    *,
    run_id: str,
    name: str,
    series_id: int,
    cursor: int | None = None,
    start: int | None = None,
    end: int | None = None,
) -> list[Slice]:
    """The series' points held in blocks, one slice per block, in ingest order."""
    family, sep, _ = name.partition("/")
    if not sep:
        return []
    blocks = family_blocks(
        session, run_id=run_id, family=family, cursor=cursor, start=start, end=end
    )
    return slices_of(blocks, series_id)


def block_seqs_after(session: Session, *, run_id: str, after: int, limit: int) -> list[int]:
    """Sequences of the run's first ``limit`` blocks after ``after``, ascending."""
    stmt = select(_b.seq).where(_b.run_id == run_id, _b.seq > after).order_by(_b.seq).limit(limit)
    return [int(s) for s in session.execute(stmt).scalars()]


def blocks_between(session: Session, *, run_id: str, after: int, hi: int) -> list[Block]:
    """The run's blocks with a sequence in (after, hi], in ingest order."""
    stmt = (
        select(*_COLUMNS)
        .where(_b.run_id == run_id, _b.seq > after, _b.seq <= hi)
        .order_by(_b.seq, _b.id)
    )
    return [_block(row) for row in session.execute(stmt)]


def families_due(session: Session, *, run_id: str, bound: int) -> list[str]:
    """Families of the run with at least ``bound`` blocks (blocks are fresh data: compaction
    turns them into chunks)."""
    stmt = (
        select(_b.family)
        .where(_b.run_id == bindparam("b_run"))
        .group_by(_b.family)
        .having(func.count() >= bindparam("b_bound"))
    )
    rows = session.connection().execute(stmt, {"b_run": run_id, "b_bound": bound})
    return [str(f) for f in rows.scalars()]


def family_counts(session: Session, *, run_id: str) -> dict[str, int]:
    """{family: blocks stored} of the run's families with blocks."""
    stmt = (
        select(_b.family, func.count()).where(_b.run_id == bindparam("b_run")).group_by(_b.family)
    )
    rows = session.connection().execute(stmt, {"b_run": run_id})
    return {str(family): int(count) for family, count in rows}


def first_member(session: Session, *, run_id: str, family: str) -> int | None:
    """A series id stored in the family's oldest block."""
    stmt = (
        select(_b.members)
        .where(_b.run_id == run_id, _b.family == family)
        .order_by(_b.seq, _b.id)
        .limit(1)
    )
    raw = session.scalar(stmt)
    return None if raw is None else int(np.frombuffer(bytes(raw)[:8], dtype=I64)[0])


def delete_blocks(session: Session, *, ids: Sequence[int]) -> int:
    """Delete these blocks; how many were there to delete."""
    deleted = 0
    for start in range(0, len(ids), IN_CHUNK):
        part = list(ids[start : start + IN_CHUNK])
        result = session.execute(delete(_blocks).where(_b.id.in_(part)))
        deleted += int(getattr(result, "rowcount", 0) or 0)
    return deleted


def names_of_family(session: Session, *, run_id: str, family: str) -> dict[int, str]:
    """{series id: name} of the run's series named ``family/...``."""
    stmt = select(_s.id, _s.name).where(
        _s.run_id == bindparam("b_run"), _s.name.startswith(family + "/", autoescape=True)
    )
    rows = session.connection().execute(stmt, {"b_run": run_id})
    return {int(i): str(n) for i, n in rows}
