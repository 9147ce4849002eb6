"""Per-series point chunks: a batch's chunk rows in one statement, and the reads over them.

See docs/architecture.md, Storage, for the ingest sequence, compaction and digests.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, delete, insert, select
from sqlalchemy.orm import Session

from trickscope_server.storage.models import ChunkRow, SeriesRow
from trickscope_server.storage.runs import IN_CHUNK

_chunks = cast(Table, ChunkRow.__table__)


_CHUNK_COLUMNS = (
    "run_id",
    "series_id",
    "step_min",
    "step_max",
    "count",
    "vmin",
    "vmax",
    "steps",
    "values",
    "times",
    "seq",
    "seq_lo",
    "origins",
    "dsteps",
    "dvalues",
)
_SQLITE_INSERT_CHUNKS = "INSERT INTO chunks ({}) VALUES ({})".format(
    ", ".join('"' + c + '"' for c in _CHUNK_COLUMNS), ", ".join("?" for _ in _CHUNK_COLUMNS)
)
_chunk_values = operator.itemgetter(*_CHUNK_COLUMNS)  # a row dict's values, in column order


# PostgreSQL: every row of a batch in one statement, each column bound as one array and unnested
# (one round trip and one parameter per column, where an executemany binds each row's values).
# The arrays are sent in binary (``%b``): as text, each bytea would be hex-escaped, then scanned
# for quoting, on the client and parsed back on the server.
_PG_CHUNK_TYPES = {
    "run_id": "text[]",
    "series_id": "bigint[]",
    "step_min": "bigint[]",
    "step_max": "bigint[]",
    "count": "integer[]",
    "vmin": "float8[]",
    "vmax": "float8[]",
    "steps": "bytea[]",
    "values": "bytea[]",
    "times": "bytea[]",
    "seq": "bigint[]",
    "seq_lo": "bigint[]",
    "origins": "bytea[]",
    "dsteps": "bytea[]",
    "dvalues": "bytea[]",
}
_PG_INSERT_CHUNKS = "INSERT INTO chunks ({}) SELECT * FROM unnest({})".format(
    ", ".join('"' + c + '"' for c in _CHUNK_COLUMNS),
    ", ".join(f"%(c_{c})b::{_PG_CHUNK_TYPES[c]}" for c in _CHUNK_COLUMNS),
)


def _unique_series(rows: Sequence[dict[str, Any]], key: str) -> bool:
    """Whether no two rows name one series: one statement over all rows merges each series once,
    so a batch naming a series twice keeps the row-by-row statements (applied in order)."""
    return len({row[key] for row in rows}) == len(rows)


def _pg_arrays(rows: Sequence[dict[str, Any]], columns: Sequence[str], prefix: str) -> dict:  # type: ignore[type-arg]
    """One list per column of ``rows``, keyed ``prefix + column``."""
    return {prefix + c: [row[c] for row in rows] for c in columns}


def insert_chunks(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Insert chunk rows (keys are the ``chunks`` columns) in one statement."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        # The hot path: straight to the driver's executemany. SQLAlchemy's per-row parameter
        # processing costs a third of a 1,000-series batch here, and every value is already in
        # the driver's types.
        session.connection().exec_driver_sql(
            _SQLITE_INSERT_CHUNKS, [_chunk_values(row) for row in rows]
        )
    elif dialect == "postgresql" and _unique_series(rows, "series_id"):
        session.connection().exec_driver_sql(
            _PG_INSERT_CHUNKS, _pg_arrays(rows, _CHUNK_COLUMNS, "c_")
        )
    else:
        session.execute(insert(_chunks), list(rows))


@dataclass(frozen=True)
class ChunkMeta:
    """What a read needs to plan which chunks to decode, without their arrays."""

    id: int
    seq: int
    seq_lo: int
    step_min: int
    step_max: int
    count: int
    has_digest: bool
    compacted: bool


_k = _chunks.c


def chunk_meta(
    session: Session, *, series_id: int, start: int | None, end: int | None, cursor: int
) -> list[ChunkMeta]:
    """The series' chunks overlapping [start, end] holding points at or below ``cursor``."""
    stmt = select(
        _k.id,
        _k.seq,
        _k.seq_lo,
        _k.step_min,
        _k.step_max,
        _k.count,
        _k.dsteps.is_not(None),
        _k.origins.is_not(None),
    ).where(_k.series_id == series_id, _k.seq_lo <= cursor)
    if start is not None:
        stmt = stmt.where(_k.step_max >= start)
    if end is not None:
        stmt = stmt.where(_k.step_min <= end)
    return [
        ChunkMeta(int(a), int(b), int(c), int(d), int(e), int(f), bool(g), bool(h))
        for a, b, c, d, e, f, g, h in session.execute(stmt.order_by(_k.seq, _k.id))
    ]


@dataclass(frozen=True)
class ChunkData:
    """Packed columns of one chunk (``times`` only when asked for)."""

    id: int
    seq: int
    steps: bytes
    values: bytes
    times: bytes | None
    origins: bytes | None


def chunk_data(session: Session, *, ids: Sequence[int], times: bool) -> list[ChunkData]:
    """Columns of the chunks with these ids, in ingest order."""
    out: list[ChunkData] = []
    times_col = _k.times if times else _k.id
    for start in range(0, len(ids), IN_CHUNK):
        part = list(ids[start : start + IN_CHUNK])
        stmt = select(_k.id, _k.seq, _k.steps, _k["values"], times_col, _k.origins).where(
            _k.id.in_(part)
        )
        for i, seq, s, v, t, o in session.execute(stmt):
            out.append(
                ChunkData(
                    int(i),
                    int(seq),
                    bytes(s),
                    bytes(v),
                    bytes(t) if times else None,
                    None if o is None else bytes(o),
                )
            )
    out.sort(key=lambda c: (c.seq, c.id))
    return out


def chunk_digests(session: Session, *, ids: Sequence[int]) -> list[tuple[bytes, bytes]]:
    """(digest steps, digest values) of the chunks with these ids."""
    out: list[tuple[bytes, bytes]] = []
    for start in range(0, len(ids), IN_CHUNK):
        part = list(ids[start : start + IN_CHUNK])
        stmt = select(_k.dsteps, _k.dvalues).where(_k.id.in_(part))
        out.extend((bytes(s), bytes(v)) for s, v in session.execute(stmt))
    return out


def series_chunk_data(
    session: Session, *, series_id: int, cursor: int | None = None
) -> list[ChunkData]:
    """Every chunk of a series with its wall times, in ingest order."""
    stmt = select(_k.id, _k.seq, _k.steps, _k["values"], _k.times, _k.origins).where(
        _k.series_id == series_id
    )
    if cursor is not None:
        stmt = stmt.where(_k.seq_lo <= cursor)
    return [
        ChunkData(int(i), int(seq), bytes(s), bytes(v), bytes(t), None if o is None else bytes(o))
        for i, seq, s, v, t, o in session.execute(stmt.order_by(_k.seq, _k.id))
    ]


def steps_from(session: Session, *, series_ids: Sequence[int], low: int) -> dict[int, list[bytes]]:
    """{series id: the packed steps of each of its chunks that reach ``low`` or above}."""
    out: dict[int, list[bytes]] = {}
    ids = list(series_ids)
    for start in range(0, len(ids), IN_CHUNK):
        stmt = select(_k.series_id, _k.steps).where(
            _k.series_id.in_(ids[start : start + IN_CHUNK]), _k.step_max >= low
        )
        for sid, steps in session.execute(stmt):
            out.setdefault(int(sid), []).append(bytes(steps))
    return out


def prefixed_chunks(
    session: Session, *, run_id: str, prefix: str
) -> list[tuple[str, bytes, bytes, int, int]]:
    """(series name, steps, values, seq, id) of every chunk of the run's series named
    ``prefix...``, in ingest order."""
    stmt = (
        select(SeriesRow.name, _k.steps, _k["values"], _k.seq, _k.id)
        .join(_chunks, _k.series_id == SeriesRow.id)
        .where(SeriesRow.run_id == run_id, SeriesRow.name.startswith(prefix, autoescape=True))
        .order_by(_k.seq, _k.id)
    )
    return [
        (name, bytes(s), bytes(v), int(seq), int(i)) for name, s, v, seq, i in session.execute(stmt)
    ]


def chunk_seqs_after(session: Session, *, run_id: str, after: int, limit: int) -> list[int]:
    """Sequences of the run's first ``limit`` chunks after ``after``, ascending."""
    stmt = select(_k.seq).where(_k.run_id == run_id, _k.seq > after).order_by(_k.seq).limit(limit)
    return [int(s) for s in session.execute(stmt).scalars()]


def chunks_between(
    session: Session, *, run_id: str, after: int, hi: int
) -> list[tuple[str, bytes, bytes, bytes | None, int, int]]:
    """Chunks holding points of sequence in (after, hi]: (name, steps, values, origins, seq, id).

    Compacted chunks come back too: the caller keeps only the points whose origin lies in the
    range, so each point is sent exactly once.
    """
    stmt = (
        select(SeriesRow.name, _k.steps, _k["values"], _k.origins, _k.seq, _k.id)
        .join(SeriesRow, SeriesRow.id == _k.series_id)
        .where(_k.run_id == run_id, _k.seq > after, _k.seq_lo <= hi)
        .order_by(_k.seq, _k.id)
    )
    return [
        (name, bytes(s), bytes(v), None if o is None else bytes(o), int(seq), int(i))
        for name, s, v, o, seq, i in session.execute(stmt)
    ]


def series_chunk_layouts(
    session: Session, *, series_ids: Sequence[int]
) -> dict[int, list[tuple[int, int, int, int]]]:
    """{series id: (id, seq, seq_lo, count) of each of its chunks, in ingest order} for these
    series (compaction's plan)."""
    out: dict[int, list[tuple[int, int, int, int]]] = {}
    for start in range(0, len(series_ids), IN_CHUNK):
        part = list(series_ids[start : start + IN_CHUNK])
        stmt = select(_k.series_id, _k.id, _k.seq, _k.seq_lo, _k.count).where(
            _k.series_id.in_(part)
        )
        for sid, i, s, lo, c in session.execute(stmt.order_by(_k.series_id, _k.seq, _k.id)):
            out.setdefault(int(sid), []).append((int(i), int(s), int(lo), int(c)))
    return out


def chunks_within(
    session: Session, *, series_ids: Sequence[int], lo: int, hi: int
) -> list[tuple[int, int, int, int]]:
    """(id, series id, seq_lo, seq) of these series' chunks lying wholly within sequences
    [lo, hi]."""
    out = []
    for start in range(0, len(series_ids), IN_CHUNK):
        part = list(series_ids[start : start + IN_CHUNK])
        stmt = select(_k.id, _k.series_id, _k.seq_lo, _k.seq).where(
            _k.series_id.in_(part), _k.seq >= lo, _k.seq <= hi, _k.seq_lo >= lo
        )
        out.extend((int(i), int(s), int(low), int(q)) for i, s, low, q in session.execute(stmt))
    return out


def delete_chunks(session: Session, *, ids: Sequence[int]) -> bool:
    """Delete these chunks; False when some were gone already (another compaction's)."""
    deleted = 0
    for start in range(0, len(ids), IN_CHUNK):
        part = list(ids[start : start + IN_CHUNK])
        result = session.execute(delete(_chunks).where(_k.id.in_(part)))
        deleted += int(getattr(result, "rowcount", 0) or 0)
    return deleted == len(ids)
