"""Queries on runs and on the series dictionary."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Table,
    and_,
    bindparam,
    case,
    cast,
    delete,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from trickscope_server.storage.block_summaries import merged, records_of_series
from trickscope_server.storage.models import (
    BatchRow,
    BlockRow,
    BlockSummaryRow,
    ChunkRow,
    HistogramBlockRow,
    HistogramLayoutRow,
    HistogramRow,
    RunRow,
    SeriesRow,
)

# Keeps every IN list well under SQLite's bound-parameter limit and PostgreSQL's plan sizes.
IN_CHUNK = 500


def insert_ignore(session: Session, table: Any) -> Any:
    """``INSERT ... ON CONFLICT DO NOTHING`` for the session's dialect."""
    # INSERT ... ON CONFLICT DO NOTHING: concurrent workers may race on the same key, and the loser
    # must neither fail nor abort its transaction.
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    raise ValueError(f"unsupported database dialect {dialect!r}: use SQLite or PostgreSQL")


def touch_run(session: Session, *, run_id: str, now: float) -> None:
    """Set the run's ``updated_at`` and ``last_seen_at``: a write, so the transaction holds the
    run's write lock (SQLite: the database's; PostgreSQL: the row's) from here on."""
    session.connection().execute(_TOUCH_RUN, {"b_run": run_id, "b_now": now})


def mark_seen(session: Session, *, run_id: str, now: float) -> bool:
    """Stamp the run's ``last_seen_at`` (a heartbeat); False when there is no such run."""
    row = session.connection().execute(_MARK_SEEN, {"b_run": run_id, "b_now": now}).first()
    return row is not None


def mark_followed(session: Session, *, run_id: str, until: float) -> None:
    """Extend the run's ``followed_until`` to ``until``; never shortens it, since another worker
    may hold a stream of the run with a later mark."""
    session.connection().execute(_MARK_FOLLOWED, {"b_run": run_id, "b_until": until})


def seen_followed_until(session: Session, *, run_id: str, now: float) -> float | None:
    """:func:`mark_seen` and :func:`followed_until` in one statement."""
    row = session.connection().execute(_SEEN_FOLLOWED, {"b_run": run_id, "b_now": now}).first()
    return None if row is None else float(row[0] or 0.0)


def mark_running_followed(session: Session, *, run_id: str, until: float) -> bool:
    """:func:`mark_followed` if the run's stored status is ``running``; True when it is (the
    mark may have been later already)."""
    running = session.connection().execute(_IS_RUNNING, {"b_run": run_id}).first()
    if running is None:
        return False
    mark_followed(session, run_id=run_id, until=until)
    return True


def followed_until(session: Session, *, run_id: str) -> float | None:
    """The Unix time until which the run is followed live (0 if it never was), or None when
    there is no such run."""
    row = session.connection().execute(_FOLLOWED_UNTIL, {"b_run": run_id}).first()
    return None if row is None else float(row[0] or 0.0)


def _silent(silent_before: float) -> Any:
    return and_(RunRow.status == "running", RunRow.last_seen_at < silent_before)


def shown_status(silent_before: float | None) -> Any:
    """The status readers see, as SQL: ``running`` last seen before the cutoff is ``crashed``
    (the rule of ``services/liveness.py``); None keeps the stored status."""
    if silent_before is None:
        return RunRow.status
    return case((_silent(silent_before), literal("crashed")), else_=RunRow.status)


def status_is(status: str, silent_before: float | None) -> Any:
    # Spelled per status rather than ``shown_status(...) == status`` so the status index serves.
    if silent_before is None or status not in ("running", "crashed"):
        return RunRow.status == status
    if status == "crashed":
        return or_(RunRow.status == "crashed", _silent(silent_before))
    return and_(
        RunRow.status == "running",
        or_(RunRow.last_seen_at.is_(None), RunRow.last_seen_at >= silent_before),
    )


_runs: Table = RunRow.__table__  # type: ignore[assignment]
_TOUCH_RUN = (
    update(_runs)
    .where(_runs.c.id == bindparam("b_run"))
    .values(updated_at=bindparam("b_now"), last_seen_at=bindparam("b_now"))
)
_MARK_FOLLOWED = (
    update(_runs)
    .where(
        _runs.c.id == bindparam("b_run"),
        or_(_runs.c.followed_until.is_(None), _runs.c.followed_until < bindparam("b_until")),
    )
    .values(followed_until=bindparam("b_until"))
)
_IS_RUNNING = select(_runs.c.id).where(
    _runs.c.id == bindparam("b_run"), _runs.c.status == "running"
)
_FOLLOWED_UNTIL = select(_runs.c.followed_until).where(_runs.c.id == bindparam("b_run"))
_MARK_SEEN = (
    update(_runs)
    .where(_runs.c.id == bindparam("b_run"))
    .values(last_seen_at=bindparam("b_now"))
    .returning(_runs.c.id)
)
_SEEN_FOLLOWED = (
    update(_runs)
    .where(_runs.c.id == bindparam("b_run"))
    .values(last_seen_at=bindparam("b_now"))
    .returning(_runs.c.followed_until)
)


def get_run(session: Session, run_id: str, *, for_update: bool = False) -> RunRow | None:
    """The run with this id, or None."""
    stmt = select(RunRow).where(RunRow.id == run_id)
    if for_update:
        stmt = stmt.with_for_update()
    return session.scalars(stmt).first()


def add_run(session: Session, row: RunRow) -> None:
    """Stage a new run."""
    session.add(row)


def insert_run_if_absent(session: Session, values: dict[str, Any]) -> bool:
    """Insert a run unless one with its id exists (a racing create); True when inserted."""
    stmt = insert_ignore(session, RunRow.__table__).values(**values).returning(RunRow.id)
    return session.execute(stmt).first() is not None


@dataclass(slots=True)
class StoredSeries:
    """A series' row with its summary merged with its block record: a plain copy, so reading a
    wide run's thousands of series costs no ORM objects."""

    run_id: str
    id: int
    name: str
    count: int
    first_step: int | None
    last_step: int | None
    last_value: float | None
    min_value: float | None
    max_value: float | None
    first_nonfinite_step: int | None


def series_of_runs(session: Session, run_ids: Sequence[str]) -> list[StoredSeries]:
    """Every series (with its summary) of the given runs, ordered by run and name.

    The summaries are merged with the records of the points the series received in blocks.
    """
    found: list[dict[str, Any]] = []
    for start in range(0, len(run_ids), IN_CHUNK):
        part = list(run_ids[start : start + IN_CHUNK])
        stmt = (
            select(*_SHOWN_COLUMNS)
            .where(SeriesRow.run_id.in_(part))
            .order_by(SeriesRow.run_id, SeriesRow.name)
        )
        found.extend(dict(row) for row in session.execute(stmt).mappings())
    wanted: dict[str, list[int]] = {}
    for fields in found:
        wanted.setdefault(fields["run_id"], []).append(fields["id"])
    return _stored(found, records_of_series(session, wanted))


SUMMARY_FIELDS = (
    "count",
    "first_step",
    "last_step",
    "last_value",
    "min_value",
    "max_value",
    "first_nonfinite_step",
)
_SHOWN_COLUMNS = [getattr(SeriesRow, f) for f in ("run_id", "id", "name", *SUMMARY_FIELDS)]


def shown_series(session: Session, runs: Sequence[RunRow]) -> dict[str, list[StoredSeries]]:
    """{run id: its series that are not per-layer (``<stat>/<declared layer>``)}, each with its
    summary merged with its block record: what a runs listing shows.

    The per-layer series (thousands in a wide model) are left out in SQL, and only the shown
    series' block records are decoded.
    """
    found: dict[str, list[dict[str, Any]]] = {run.id: [] for run in runs}
    by_layers: dict[tuple[str, ...], list[str]] = {}
    for run in runs:
        layers = tuple(layer for layer in run.layers or () if isinstance(layer, str))
        if _UNNAMEABLE.search("".join(layers)):  # one search per run: thousands of layers
            layers = tuple(layer for layer in layers if not _UNNAMEABLE.search(layer))
        by_layers.setdefault(layers, []).append(run.id)
    for layers, ids in by_layers.items():
        for start in range(0, len(ids), IN_CHUNK):
            stmt = (
                select(*_SHOWN_COLUMNS)
                .where(SeriesRow.run_id.in_(ids[start : start + IN_CHUNK]))
                .order_by(SeriesRow.run_id, SeriesRow.name)
            )
            if layers:
                stmt = stmt.where(_not_per_layer(session, layers))
            for row in session.execute(stmt).mappings():
                found[row["run_id"]].append(dict(row))
    records = records_of_series(
        session, {run_id: [r["id"] for r in rows] for run_id, rows in found.items()}
    )
    return {run_id: _stored(rows, records) for run_id, rows in found.items()}


def _stored(found: list[dict[str, Any]], records: dict[int, Any]) -> list[StoredSeries]:
    """The series' rows as found, each summary merged with its block record (if any)."""
    out = []
    for fields in found:
        rec = records.get(fields["id"])
        if rec is not None:
            fields.update(merged(fields, rec))
        fields["count"] = fields["count"] or 0
        out.append(StoredSeries(**fields))
    return out


def series_with_points(
    session: Session, run_ids: Sequence[str], names: Sequence[str]
) -> dict[str, dict[str, int]]:
    """{run id: {name: series id}} of the series of these names that hold points (in their own
    rows or in blocks), reading only those series."""
    found: list[Any] = []  # (run id, series id, name, count) rows
    for start in range(0, len(run_ids), IN_CHUNK):
        stmt = select(SeriesRow.run_id, SeriesRow.id, SeriesRow.name, SeriesRow.count).where(
            SeriesRow.run_id.in_(list(run_ids[start : start + IN_CHUNK])),
            SeriesRow.name.in_(list(names)),
        )
        found.extend(session.execute(stmt).all())
    empty: dict[str, list[int]] = {}
    for run_id, sid, _, count in found:
        if not count:
            empty.setdefault(run_id, []).append(sid)
    in_blocks = records_of_series(session, empty)
    out: dict[str, dict[str, int]] = {}
    for run_id, sid, name, count in found:
        if count or sid in in_blocks:
            out.setdefault(run_id, {})[name] = sid
    return out


# A layer declared before the server checked its input may hold text no series name can (NUL, a
# lone surrogate), which PostgreSQL's jsonb would refuse: it names no series, so it is left out.
_UNNAMEABLE = re.compile("[\x00\ud800-\udfff]")


def _not_per_layer(session: Session, layers: Sequence[str]) -> Any:
    """SQL: the series name is not ``<anything>/<one of layers>`` (``per_layer`` in services).

    The layers travel as one JSON parameter (a model may declare more layers than a statement
    may have parameters), expanded once into a set the database probes per series.
    """
    text = json.dumps(list(layers))
    if session.get_bind().dialect.name == "postgresql":
        slash = func.strpos(SeriesRow.name, "/")
        listed = select(func.jsonb_array_elements_text(cast(literal(text), JSONB)))
    else:
        slash = func.instr(SeriesRow.name, "/")
        listed = select(func.json_each(literal(text)).table_valued("value").c.value)
    return or_(slash == 0, func.substr(SeriesRow.name, slash + 1).not_in(listed.scalar_subquery()))


def delete_run(session: Session, run_id: str) -> bool:
    """Delete a run and everything it owns; False when there was no such run."""
    # Children first and explicitly: correct even where foreign keys are not enforced.
    session.execute(delete(ChunkRow).where(ChunkRow.run_id == run_id))
    session.execute(delete(BlockRow).where(BlockRow.run_id == run_id))
    session.execute(delete(BlockSummaryRow).where(BlockSummaryRow.run_id == run_id))
    session.execute(delete(HistogramRow).where(HistogramRow.run_id == run_id))
    session.execute(delete(HistogramBlockRow).where(HistogramBlockRow.run_id == run_id))
    session.execute(delete(HistogramLayoutRow).where(HistogramLayoutRow.run_id == run_id))
    session.execute(delete(BatchRow).where(BatchRow.run_id == run_id))
    session.execute(delete(SeriesRow).where(SeriesRow.run_id == run_id))
    result = session.execute(delete(RunRow).where(RunRow.id == run_id))
    return bool(getattr(result, "rowcount", 0))
