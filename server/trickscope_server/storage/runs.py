"""Queries on runs and on the series dictionary."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Float,
    String,
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
from sqlalchemy.orm.attributes import set_committed_value

from trickscope_server.storage.block_summaries import NO_STEP, records_of_runs
from trickscope_server.storage.models import (
    BatchRow,
    BlockRow,
    BlockSummaryRow,
    ChunkRow,
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


def _silent(silent_before: float) -> Any:
    return and_(RunRow.status == "running", RunRow.last_seen_at < silent_before)


def shown_status(silent_before: float | None) -> Any:
    """The status readers see, as SQL: ``running`` last seen before the cutoff is ``crashed``
    (the rule of ``services/liveness.py``); None keeps the stored status."""
    if silent_before is None:
        return RunRow.status
    return case((_silent(silent_before), literal("crashed")), else_=RunRow.status)


def _status_is(status: str, silent_before: float | None) -> Any:
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
_MARK_SEEN = (
    update(_runs)
    .where(_runs.c.id == bindparam("b_run"))
    .values(last_seen_at=bindparam("b_now"))
    .returning(_runs.c.id)
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


@dataclass(frozen=True)
class RunQuery:
    """Filters and order of a run listing (see docs/architecture.md, Run history)."""

    project: str | None = None
    status: str | None = None
    tags: tuple[str, ...] = ()
    config: tuple[tuple[tuple[str, ...], Any], ...] = ()  # (dotted key as parts, JSON scalar)
    metrics: tuple[tuple[str, str, float], ...] = ()  # (series name, operator, value)
    sort: str = "created_at"  # created_at | name | status | config | metric
    sort_key: tuple[str, ...] = ()  # the config key parts or (metric name,)
    descending: bool = True
    # Liveness: running runs last seen before this Unix time read (filter, sort) as crashed.
    silent_before: float | None = None


def _is_pg(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


# Rows stored before the server checked its input may hold JSON a query function cannot read:
# NaN literals (SQLite's JSON functions refuse them) or ``\u0000`` and lone surrogate escapes
# (PostgreSQL's jsonb refuses them). Such a row reads as having no value there, so one old row
# cannot fail every listing that sorts or filters on config or tags.
_PG_UNREADABLE = r"\\u(0000|d[89a-f])"


def _readable_json(session: Session, column: Any) -> Any:
    if _is_pg(session):
        text = cast(column, String)
        return case((text.op("!~*")(_PG_UNREADABLE), cast(column, JSONB)), else_=None)
    return case((func.json_valid(column) == 1, column), else_=None)


def _config_value(session: Session, parts: tuple[str, ...]) -> Any:
    config = _readable_json(session, RunRow.config)
    if _is_pg(session):
        return func.jsonb_extract_path(config, *parts)
    path = "$" + "".join(f'."{p}"' for p in parts)
    return func.json_extract(config, path)


def _sqlite_json_type(parts: tuple[str, ...]) -> Any:
    path = "$" + "".join(f'."{p}"' for p in parts)
    return func.json_type(case((func.json_valid(RunRow.config) == 1, RunRow.config)), path)


def _config_equals(session: Session, parts: tuple[str, ...], value: Any) -> Any:
    if _is_pg(session):
        return _config_value(session, parts) == cast(literal(json.dumps(value)), JSONB)
    kind = _sqlite_json_type(parts)
    if value is None:
        return kind == "null"
    if isinstance(value, bool):
        return kind == ("true" if value else "false")
    if isinstance(value, (int, float)):
        return and_(kind.in_(["integer", "real"]), _config_value(session, parts) == value)
    return and_(kind == "text", _config_value(session, parts) == value)


_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "=": lambda a, b: a == b,
}


def _metric_value(session: Session, name: str) -> Any:
    # A NaN latest value reads as missing on both backends: SQLite stores NaN as NULL, and
    # PostgreSQL would otherwise sort NaN above every number and match it with ``>``.
    value: Any = SeriesRow.last_value
    if _is_pg(session):
        value = func.nullif(value, literal(math.nan, Float))
    return (
        select(value).where(SeriesRow.run_id == RunRow.id, SeriesRow.name == name).scalar_subquery()
    )


def _sort_expr(session: Session, query: RunQuery) -> Any:
    if query.sort == "created_at":
        return RunRow.created_at
    if query.sort == "name":
        return RunRow.name
    if query.sort == "status":
        return shown_status(query.silent_before)
    if query.sort == "config":
        return _config_value(session, query.sort_key)
    return _metric_value(session, query.sort_key[0])


def _bind_sort_value(session: Session, query: RunQuery, value: Any) -> Any:
    if query.sort == "config" and _is_pg(session):
        return cast(literal(json.dumps(value)), JSONB)
    if isinstance(value, dict | list):  # SQLite's json_extract gives containers as JSON text
        return json.dumps(value, separators=(",", ":"))
    return value


def list_runs(
    session: Session,
    query: RunQuery,
    *,
    after: tuple[bool, Any, str] | None,
    limit: int,
) -> list[tuple[RunRow, Any]]:
    """(run, sort value) pairs in the query's order, strictly after the position ``after``.

    The order is (sort value missing last, sort value, id), so pages are stable and neither
    repeat nor skip a run; ``after`` is (value missing, value, id) of the previous page's last.
    """
    key = _sort_expr(session, query)
    stmt = select(RunRow, key.label("sort_value"))
    if query.project is not None:
        stmt = stmt.where(RunRow.project == query.project)
    if query.status is not None:
        stmt = stmt.where(_status_is(query.status, query.silent_before))
    for tag in query.tags:
        if _is_pg(session):
            stmt = stmt.where(
                _readable_json(session, RunRow.tags).contains(
                    cast(literal(json.dumps([tag])), JSONB)
                )
            )
        else:
            tags = case((func.json_valid(RunRow.tags) == 1, RunRow.tags), else_="[]")
            each = func.json_each(tags).table_valued("value")
            stmt = stmt.where(
                select(literal(1)).select_from(each).where(each.c.value == tag).exists()
            )
    for parts, value in query.config:
        stmt = stmt.where(_config_equals(session, parts, value))
    for name, op, value in query.metrics:
        stmt = stmt.where(_OPS[op](_metric_value(session, name), value))
    forward: Callable[[Any, Any], Any] = (
        (lambda a, b: a < b) if query.descending else (lambda a, b: a > b)
    )
    if after is not None:
        missing, value, run_id = after
        if missing:
            stmt = stmt.where(key.is_(None), forward(RunRow.id, run_id))
        else:
            bound = _bind_sort_value(session, query, value)
            stmt = stmt.where(
                or_(
                    key.is_(None),
                    forward(key, bound),
                    and_(key == bound, forward(RunRow.id, run_id)),
                )
            )
    direction: Callable[[Any], Any] = (
        (lambda c: c.desc()) if query.descending else (lambda c: c.asc())
    )
    stmt = stmt.order_by(case((key.is_(None), 1), else_=0), direction(key), direction(RunRow.id))
    return [(row, value) for row, value in session.execute(stmt.limit(limit))]


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
    _merge_block_records(rows, records_of_runs(session, run_ids))
    return rows


def _merge_block_records(rows: list[SeriesRow], records: dict[int, Any]) -> None:
    """Each row's summary merged with the record of the points its series received in blocks.

    The two describe disjoint steps (a re-logged step recounts the series into its row), so the
    counts add and the later of the two last steps carries the last value. The merged values are
    set as loaded state: a reader's session never writes them back.
    """
    for row in rows:
        rec = records.get(row.id)
        if rec is None:
            continue
        count, first, last = int(rec["count"]), int(rec["first"]), int(rec["last"])
        vmin, vmax = float(rec["vmin"]), float(rec["vmax"])
        nonfinite = None if int(rec["nonfinite"]) == NO_STEP else int(rec["nonfinite"])
        had = bool(row.count)
        later = not had or row.last_step is None or last > row.last_step
        merged = {
            "count": (row.count or 0) + count,
            "first_step": first if not had else min(first, row.first_step),
            "last_step": last if later else row.last_step,
            "last_value": float(rec["last_value"]) if later else row.last_value,
            "min_value": _either(min, row.min_value if had else None, vmin),
            "max_value": _either(max, row.max_value if had else None, vmax),
            "first_nonfinite_step": _either(
                min, row.first_nonfinite_step if had else None, nonfinite
            ),
        }
        for key, value in merged.items():
            set_committed_value(row, key, value)


def _either(pick: Callable[[Any, Any], Any], a: Any, b: Any) -> Any:
    """``pick`` of the two values that are present (None, or NaN for a float, is absent)."""
    a = None if a is None or (isinstance(a, float) and math.isnan(a)) else a
    b = None if b is None or (isinstance(b, float) and math.isnan(b)) else b
    if a is None or b is None:
        return b if a is None else a
    return pick(a, b)


def delete_run(session: Session, run_id: str) -> bool:
    """Delete a run and everything it owns; False when there was no such run."""
    # Children first and explicitly: correct even where foreign keys are not enforced.
    session.execute(delete(ChunkRow).where(ChunkRow.run_id == run_id))
    session.execute(delete(BlockRow).where(BlockRow.run_id == run_id))
    session.execute(delete(BlockSummaryRow).where(BlockSummaryRow.run_id == run_id))
    session.execute(delete(HistogramRow).where(HistogramRow.run_id == run_id))
    session.execute(delete(BatchRow).where(BatchRow.run_id == run_id))
    session.execute(delete(SeriesRow).where(SeriesRow.run_id == run_id))
    result = session.execute(delete(RunRow).where(RunRow.id == run_id))
    return bool(getattr(result, "rowcount", 0))
