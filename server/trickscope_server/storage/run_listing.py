"""The run listing (``GET /runs``): its filters and order.

Filters and sorts on run columns and config run in SQL, with keyset pages. A series' latest value
lives in its row or in its block record (``storage/block_summaries.py``), whichever holds the
later step, and SQL cannot read the packed records: so listings that filter or sort by latest
values read the candidate runs' ids and those series' rows in SQL, merge in the block records of
those series only, and filter, order and page in Python with the same rules.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, String, and_, case, cast, func, literal, or_, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session, aliased

from trickscope_server.storage.block_summaries import records_of_series
from trickscope_server.storage.models import RunRow, SeriesRow
from trickscope_server.storage.runs import IN_CHUNK, shown_status, status_is


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


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "=": operator.eq,
}

Position = tuple[bool, Any, str]  # (sort value missing, sort value, run id)


@dataclass(frozen=True)
class ListedRun:
    """A run of a listing, with what the listing read of it."""

    run: RunRow
    sort_value: Any  # its keyset position's value (None: missing)
    # {name: latest value} of the series the query filters or sorts by that the run has points
    # of, NaN and ±Inf as stored; per-layer series included, whose values a run's own summary
    # leaves out. Empty when the query names no series.
    latest: dict[str, float] = field(default_factory=dict)


def list_runs(
    session: Session,
    query: RunQuery,
    *,
    after: Position | None,
    limit: int,
) -> list[ListedRun]:
    """The runs in the query's order, strictly after the position ``after``.

    The order is (sort value missing last, sort value, id), so pages are stable and neither
    repeat nor skip a run; ``after`` is (value missing, value, id) of the previous page's last.
    A latest value that is NaN, or a run without the series, counts as missing: such a run
    matches no metric filter and sorts last.
    """
    if query.sort != "metric" and not query.metrics:
        key = _sort_expr(session, query)
        stmt = _keyset(session, query, _filtered(session, query, select(RunRow, key)), key, after)
        return [ListedRun(row, value) for row, value in session.execute(stmt.limit(limit))]
    return _list_by_latest(session, query, after=after, limit=limit)


def _filtered(session: Session, query: RunQuery, stmt: Select[Any]) -> Select[Any]:
    """``stmt`` restricted by the query's project, status, tags and config filters."""
    if query.project is not None:
        stmt = stmt.where(RunRow.project == query.project)
    if query.status is not None:
        stmt = stmt.where(status_is(query.status, query.silent_before))
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
    return stmt


def _keyset(
    session: Session, query: RunQuery, stmt: Select[Any], key: Any, after: Position | None
) -> Select[Any]:
    """``stmt`` ordered by (``key`` missing last, ``key``, id), from strictly after ``after``."""
    forward: Callable[[Any, Any], Any] = operator.lt if query.descending else operator.gt
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
    return stmt.order_by(case((key.is_(None), 1), else_=0), direction(key), direction(RunRow.id))


def _list_by_latest(
    session: Session, query: RunQuery, *, after: Position | None, limit: int
) -> list[ListedRun]:
    """:func:`list_runs` for a query that filters or sorts by latest values."""
    by_metric = query.sort == "metric"
    filtered = {name for name, _, _ in query.metrics}
    names = list(dict.fromkeys([*filtered, *(query.sort_key if by_metric else ())]))
    columns: list[Any] = [RunRow.id]
    joins = []
    for i, name in enumerate(names):
        series = aliased(SeriesRow, name=f"s{i}")
        columns += [series.id, series.count, series.last_step, series.last_value]
        # A run without a filtered series can match no filter on it: an inner join drops it.
        joins.append((series, and_(series.run_id == RunRow.id, series.name == name), name))
    key = None if by_metric else _sort_expr(session, query)
    stmt = select(*columns, *([key] if key is not None else [])).select_from(RunRow)
    for series, on, name in joins:
        stmt = stmt.join(series, on) if name in filtered else stmt.outerjoin(series, on)
    stmt = _filtered(session, query, stmt)
    if key is not None:
        stmt = _keyset(session, query, stmt, key, after)
    rows = session.execute(stmt).all()
    wanted: dict[str, list[int]] = {}
    for row in rows:
        wanted[row[0]] = [row[1 + 4 * i] for i in range(len(names)) if row[1 + 4 * i] is not None]
    records = records_of_series(session, wanted)
    ranked: list[tuple[str, Any]] = []
    latest_of: dict[str, dict[str, float]] = {}
    for row in rows:
        values = [_latest(*row[1 + 4 * i : 5 + 4 * i], records=records) for i in range(len(names))]
        latest = {name: v for name, v in zip(names, values, strict=True) if v is not None}
        if all(_matches(latest.get(name), op, bound) for name, op, bound in query.metrics):
            sort_value = _ranked(latest.get(query.sort_key[0])) if by_metric else row[-1]
            ranked.append((row[0], sort_value))
            latest_of[row[0]] = latest
    if by_metric:
        ranked = _in_order(ranked, descending=query.descending, after=after)
    return [
        ListedRun(run, value, latest_of[run.id])
        for run, value in _with_runs(session, ranked[:limit])
    ]


def _latest(
    series_id: int | None,
    count: int | None,
    last_step: int | None,
    last_value: float | None,
    *,
    records: dict[int, Any],
) -> float | None:
    """A series' latest value from its row and its block record (the later last step wins, as
    in ``block_summaries.merged``), NaN included; None when the run has no points of it. SQLite
    stores NaN as NULL, so a NULL on a row with points is NaN."""
    if series_id is None:
        return None
    rec = records.get(series_id)
    if rec is not None and (not count or last_step is None or int(rec["last"]) > last_step):
        return float(rec["last_value"])
    if not count:
        return None
    return math.nan if last_value is None else last_value


def _ranked(value: float | None) -> float | None:
    """A latest value as filters and sorts read it: NaN counts as missing."""
    return None if value is None or math.isnan(value) else value


def _matches(value: float | None, op: str, bound: float) -> bool:
    value = _ranked(value)
    return value is not None and _OPS[op](value, bound)


def _in_order(
    ranked: list[tuple[str, Any]], *, descending: bool, after: Position | None
) -> list[tuple[str, Any]]:
    """(run id, value) pairs in the keyset order SQL gives :func:`list_runs`, after ``after``."""
    present = sorted(((v, i) for i, v in ranked if v is not None), reverse=descending)
    missing = sorted((i for i, v in ranked if v is None), reverse=descending)
    ordered = [(i, v) for v, i in present] + [(i, None) for i in missing]
    if after is None:
        return ordered
    forward = operator.lt if descending else operator.gt
    was_missing, bound, run_id = after
    if was_missing:
        return [(i, v) for i, v in ordered if v is None and forward(i, run_id)]
    return [(i, v) for i, v in ordered if v is None or forward((v, i), (bound, run_id))]


def _with_runs(session: Session, ranked: Sequence[tuple[str, Any]]) -> list[tuple[RunRow, Any]]:
    """The runs of (run id, sort value) pairs, in their order."""
    ids = [run_id for run_id, _ in ranked]
    runs: dict[str, RunRow] = {}
    for start in range(0, len(ids), IN_CHUNK):
        stmt = select(RunRow).where(RunRow.id.in_(ids[start : start + IN_CHUNK]))
        runs.update((run.id, run) for run in session.scalars(stmt))
    return [(runs[run_id], value) for run_id, value in ranked if run_id in runs]


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


def _sort_expr(session: Session, query: RunQuery) -> Any:
    if query.sort == "created_at":
        return RunRow.created_at
    if query.sort == "name":
        return RunRow.name
    if query.sort == "status":
        return shown_status(query.silent_before)
    if query.sort == "config":
        return _config_value(session, query.sort_key)
    raise ValueError(f"sort {query.sort!r} is not one SQL orders by")


def _bind_sort_value(session: Session, query: RunQuery, value: Any) -> Any:
    if query.sort == "config" and _is_pg(session):
        return cast(literal(json.dumps(value)), JSONB)
    if isinstance(value, dict | list):  # SQLite's json_extract gives containers as JSON text
        return json.dumps(value, separators=(",", ":"))
    return value
