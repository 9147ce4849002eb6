"""Writes and reads of point chunks: a batch is a handful of executemany statements.

See docs/architecture.md, Storage, for the ingest sequence, compaction and digests.
"""

from __future__ import annotations

import operator
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Float,
    Table,
    bindparam,
    case,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from trickscope_server.storage.models import BatchRow, ChunkRow, HistogramRow, RunRow, SeriesRow
from trickscope_server.storage.runs import IN_CHUNK, insert_ignore

_series = cast(Table, SeriesRow.__table__)
_chunks = cast(Table, ChunkRow.__table__)


def next_seq(session: Session, *, run_id: str, now: float) -> tuple[int, float] | None:
    """Take the run's next ingest sequence number (and stamp ``updated_at`` and ``last_seen_at``);
    None without the run.

    Returns the sequence number and the run's ``created_at``, which tells a run apart from one
    deleted and created again under the same id (see :class:`SeriesIdCache`).

    The UPDATE locks the run's row until the transaction ends, so on PostgreSQL two batches of one
    run commit in sequence order: a reader that sees sequence ``s`` sees every sequence below it.
    """
    row = session.connection().execute(_NEXT_SEQ, {"b_run": run_id, "b_now": now}).first()
    return None if row is None else (int(row[0]), float(row[1]))


# Statements of every batch, built once: a core statement skips the ORM's bulk-DML planning, and
# a fixed one hits SQLAlchemy's compiled cache (a small batch spent half its time building them).
_runs = cast(Table, RunRow.__table__)
_NEXT_SEQ = (
    update(_runs)
    .where(_runs.c.id == bindparam("b_run"))
    # last_seen_at rides on this UPDATE: liveness costs the ingest path no statement of its own.
    .values(
        last_seq=_runs.c.last_seq + 1,
        updated_at=bindparam("b_now"),
        last_seen_at=bindparam("b_now"),
    )
    .returning(_runs.c.last_seq, _runs.c.created_at)
)
_batches = cast(Table, BatchRow.__table__)
_RECORD_BATCH = {
    dialect: module.insert(_batches).on_conflict_do_nothing().returning(_batches.c.batch_id)
    for dialect, module in (("sqlite", sqlite), ("postgresql", postgresql))
}


def run_seq(session: Session, *, run_id: str) -> int:
    """The run's ingest sequence: every batch at or below it is committed and visible."""
    value = session.scalar(select(RunRow.last_seq).where(RunRow.id == run_id))
    return int(value or 0)


def record_batch(session: Session, *, run_id: str, batch_id: str, points: int, now: float) -> bool:
    """Record a batch id; False when the run already has it (the batch is a duplicate)."""
    # RETURNING rather than rowcount: psycopg reports -1 for this statement. ON CONFLICT DO
    # NOTHING: two workers may race on one batch, and the loser must not abort its transaction.
    stmt = _RECORD_BATCH[session.get_bind().dialect.name]
    values = {"run_id": run_id, "batch_id": batch_id, "points": points, "received_at": now}
    return session.connection().execute(stmt, values).first() is not None


class SeriesIdCache:
    """Series ids of recently written runs, so a batch does not look up thousands of names.

    A series keeps its id for its run's lifetime; a run deleted and created again under the same
    id has a new ``created_at``, so entries are keyed by both and a stale id is never served.
    Only ids from committed transactions may be added. Thread-safe; at most ``runs`` runs kept.
    """

    def __init__(self, runs: int = 256) -> None:
        self._runs = runs
        self._entries: OrderedDict[tuple[str, float], dict[str, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, run_id: str, created_at: float) -> dict[str, int]:
        """A copy of the ids known for the run (empty when none)."""
        with self._lock:
            known = self._entries.get((run_id, created_at))
            if known is None:
                return {}
            self._entries.move_to_end((run_id, created_at))
            return dict(known)

    def add(self, run_id: str, created_at: float, ids: dict[str, int]) -> None:
        """Remember committed ids of the run's series."""
        with self._lock:
            key = (run_id, created_at)
            self._entries.setdefault(key, {}).update(ids)
            self._entries.move_to_end(key)
            while len(self._entries) > self._runs:
                self._entries.popitem(last=False)


def ensure_series(
    session: Session, *, run_id: str, names: Sequence[str], known: dict[str, int] | None = None
) -> dict[str, int]:
    """Ids of the run's series with these names, creating the missing ones.

    ``known`` holds ids already known (from :class:`SeriesIdCache`); only the other names are
    looked up.
    """
    known = known or {}
    ids: dict[str, int] = {}
    unique = []
    for name in dict.fromkeys(names):
        sid = known.get(name)
        if sid is None:
            unique.append(name)
        else:
            ids[name] = sid
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
                insert_ignore(session, _series),
                [{"run_id": run_id, "name": name, "count": 0} for name in missing],
            )
            created = session.execute(
                select(SeriesRow.name, SeriesRow.id).where(
                    SeriesRow.run_id == run_id, SeriesRow.name.in_(missing)
                )
            )
            ids.update({name: sid for name, sid in created})
    return ids


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
    ", ".join(f"%(c_{c})s::{_PG_CHUNK_TYPES[c]}" for c in _CHUNK_COLUMNS),
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
        ", ".join(f"%({name})s::{kind}" for name, kind in _SUMMARY_COLUMNS),
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


def get_series(session: Session, *, run_id: str, name: str) -> SeriesRow | None:
    """The run's series with this name, or None."""
    return session.scalars(
        select(SeriesRow).where(SeriesRow.run_id == run_id, SeriesRow.name == name)
    ).first()


def series_needing_compaction(
    session: Session, *, run_id: str, series_ids: Sequence[int], bound: int
) -> list[int]:
    """Those of ``series_ids`` (series of ``run_id``) with at least ``bound`` chunks stored since
    their last compaction.

    One query over the run's series (its index) rather than an ``IN`` list of a wide batch's
    thousands of ids, which cost more to bind than the rows cost to read.
    """
    wanted = set(series_ids)
    rows = session.connection().execute(_NEEDING_COMPACTION, {"b_run": run_id, "b_bound": bound})
    return [int(i) for i in rows.scalars() if i in wanted]


_NEEDING_COMPACTION = select(_c.id).where(
    _c.run_id == bindparam("b_run"), _c.pending_chunks >= bindparam("b_bound")
)


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


def prefixed_chunks(
    session: Session, *, run_id: str, prefix: str
) -> list[tuple[str, bytes, bytes]]:
    """(series name, steps, values) of every chunk of the run's series named ``prefix...``."""
    stmt = (
        select(SeriesRow.name, _k.steps, _k["values"])
        .join(_chunks, _k.series_id == SeriesRow.id)
        .where(SeriesRow.run_id == run_id, SeriesRow.name.startswith(prefix, autoescape=True))
        .order_by(_k.seq, _k.id)
    )
    return [(name, bytes(s), bytes(v)) for name, s, v in session.execute(stmt)]


def chunks_after(
    session: Session, *, run_id: str, after: int, limit: int
) -> tuple[int, list[tuple[str, bytes, bytes, bytes | None, int]]]:
    """Chunks with points of sequence in (after, hi]: (hi, [(name, steps, values, origins, seq)]).

    ``hi`` is the sequence of the ``limit``-th chunk after ``after`` (or the newest), and every
    chunk with a point in the range comes back, compacted ones included: the caller keeps only the
    points whose origin lies in the range, so each point is sent exactly once.
    """
    newest = select(_k.seq).where(_k.run_id == run_id, _k.seq > after)
    page = newest.order_by(_k.seq).limit(limit).subquery()
    hi = session.scalar(select(func.max(page.c.seq)))
    if hi is None:
        return after, []
    stmt = (
        select(SeriesRow.name, _k.steps, _k["values"], _k.origins, _k.seq)
        .join(SeriesRow, SeriesRow.id == _k.series_id)
        .where(_k.run_id == run_id, _k.seq > after, _k.seq_lo <= hi)
        .order_by(_k.seq, _k.id)
    )
    rows = [
        (name, bytes(s), bytes(v), None if o is None else bytes(o), int(seq))
        for name, s, v, o, seq in session.execute(stmt)
    ]
    return int(hi), rows


def series_chunk_layout(session: Session, *, series_id: int) -> list[tuple[int, int, int, int]]:
    """(id, seq, seq_lo, count) of every chunk of a series, in ingest order (compaction's plan)."""
    stmt = select(_k.id, _k.seq, _k.seq_lo, _k.count).where(_k.series_id == series_id)
    return [
        (int(i), int(s), int(lo), int(c))
        for i, s, lo, c in session.execute(stmt.order_by(_k.seq, _k.id))
    ]


def replace_chunks(session: Session, *, ids: Sequence[int], row: dict[str, Any]) -> bool:
    """Delete the chunks ``ids`` and insert ``row`` in their place; False (and nothing done to
    the merged row) when another compaction got to any of them first."""
    result = session.execute(delete(_chunks).where(_k.id.in_(list(ids))))
    if getattr(result, "rowcount", -1) != len(ids):
        return False
    session.execute(insert(_chunks), [row])
    return True


def set_pending(session: Session, *, series_id: int, pending: int) -> None:
    """Reset the series' count of chunks stored since compaction."""
    session.execute(update(_series).where(_c.id == series_id).values(pending_chunks=pending))


def series_ids_of_run(session: Session, *, run_id: str) -> list[tuple[int, str]]:
    """(id, name) of every series of the run, by name."""
    stmt = select(_c.id, _c.name).where(_c.run_id == run_id).order_by(_c.name)
    return [(int(i), str(n)) for i, n in session.execute(stmt)]


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


def series_run(session: Session, *, series_id: int) -> str | None:
    """The run a series belongs to, or None when it no longer exists."""
    value = session.scalar(select(_c.run_id).where(_c.id == series_id))
    return None if value is None else str(value)


def last_steps_from(session: Session, *, run_id: str, low: int) -> dict[int, int]:
    """{series id: last step} of the run's series whose last step is ``low`` or above: the
    only ones a batch whose steps start at ``low`` can overwrite a point of."""
    stmt = select(_c.id, _c.last_step).where(
        _c.run_id == bindparam("b_run"), _c.last_step >= bindparam("b_low", type_=BigInteger)
    )
    rows = session.connection().execute(stmt, {"b_run": run_id, "b_low": low})
    return {int(i): int(last) for i, last in rows}


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
