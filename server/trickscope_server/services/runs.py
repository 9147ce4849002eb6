"""Run use cases: create/update, declare layers, finish, read, list, delete."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import math
import re
import time
from typing import cast

import orjson

from trickscope_server.errors import (
    InvalidPayloadError,
    RunNotFoundError,
    UnsupportedWireVersionError,
)
from trickscope_server.schemas import RunOut, RunPage, SeriesList, SeriesOut
from trickscope_server.services import liveness
from trickscope_server.services._convert import (
    finite_or_none,
    per_layer,
    readable,
    run_out_dict,
    stored_last_value,
)
from trickscope_server.services.limits import (
    MAX_BODY_DEPTH,
    check_int64,
    check_json_value,
    check_unix,
    unstorable_text,
)
from trickscope_server.storage import Database, RunRow, Session
from trickscope_server.storage import run_listing as listing
from trickscope_server.storage import runs as store
from trickscope_server.storage.runs import StoredSeries
from trickscope_wire import (
    WIRE_VERSION,
    LayersDeclare,
    RankDeclare,
    RunCreate,
    RunFinish,
    finite_or_token,
)
from trickscope_wire.payloads import FINAL_STATUSES, RUN_STATUSES

MAX_PAGE = 200
_MAX_TEXT = 256


def check_wire_version(version: object) -> None:
    """Reject payloads in a wire version this server does not speak, naming both versions."""
    if isinstance(version, bool) or not isinstance(version, int):
        raise InvalidPayloadError(
            f"wire_version must be an integer, got {version!r}",
            errors=[{"loc": ["body", "wire_version"], "msg": "must be an integer"}],
        )
    if version != WIRE_VERSION:
        raise UnsupportedWireVersionError(
            f"this server speaks wire version {WIRE_VERSION}, the request uses version {version}: "
            "install matching trickscope versions on the agent and the server"
        )


def _check_text(field: str, value: str, *, allow_empty: bool = False) -> None:
    if (not value and not allow_empty) or len(value) > _MAX_TEXT:
        raise InvalidPayloadError(
            f"{field} must be 1 to {_MAX_TEXT} characters, got {value!r:.80}",
            errors=[{"loc": ["body", field], "msg": f"must be 1 to {_MAX_TEXT} characters"}],
        )


def _unix(field: str, value: float | None) -> float | None:
    return check_unix(["body", field], value)  # a datetime can show it, on every back end


def run_out(session: Session, run: RunRow, *, silent_before: float | None = None) -> RunOut:
    """The ``RunOut`` of a run read in this session, its status judged for liveness against
    ``silent_before`` (see ``services/liveness.py``; None shows the stored status)."""
    return _run_out(run, store.shown_series(session, [run])[run.id], silent_before)


def _run_out(
    run: RunRow,
    series: list[StoredSeries],
    silent_before: float | None,
    listed: dict[str, float] | None = None,
) -> RunOut:
    """``series``: the run's series that are not per-layer (``store.shown_series``);
    ``listed``: latest values a listing read (``ListedRun.latest``), shown among ``latest`` too,
    per-layer ones included, so a table sorted or filtered by a series can show its values."""
    fields = run_out_dict(run, series)
    if listed:
        shown = cast(dict[str, object], fields["latest"])
        shown.update((readable(name), finite_or_token(v)) for name, v in listed.items())
    fields["status"] = liveness.shown_status(run.status, run.last_seen_at, silent_before)
    fields.update(_summary_fields(run, series))
    return RunOut.model_validate(fields)


def _summary_fields(run: RunRow, series: list[StoredSeries]) -> dict[str, object]:
    """``last_step`` and ``summary`` of a run, from the summaries its series keep at ingest.

    Per-layer series are left out, as in ``latest``: a runs table shows run-level numbers.
    """
    layers = set(run.layers)
    shown = [s for s in series if s.count and not per_layer(s.name, layers)]
    steps = [s.last_step for s in shown if s.last_step is not None]
    return {
        "last_step": max(steps) if steps else None,
        "summary": {
            readable(s.name): {
                "min": finite_or_none(s.min_value),
                "max": finite_or_none(s.max_value),
            }
            for s in shown
        },
    }


def require_run(session: Session, run_id: str, *, for_update: bool = False) -> RunRow:
    """The run, or a 404 problem that says how to create it."""
    run = store.get_run(session, run_id, for_update=for_update)
    if run is None:
        raise RunNotFoundError(
            f"run {run_id!r} does not exist: create it with PUT /api/v1/runs/{run_id} first"
        )
    return run


def upsert_run(db: Database, *, run_id: str, payload: RunCreate) -> RunOut:
    """Create the run, or update its metadata; idempotent, so retries are safe."""
    check_wire_version(payload.wire_version)
    _check_text("project", payload.project)
    _check_text("name", payload.name, allow_empty=True)
    started_at = _unix("started_at", payload.started_at)
    now = time.time()
    with db.transaction() as session:
        # Insert-if-absent first: two racing first PUTs of one run both succeed, one creating it
        # and the other updating it, instead of one failing on the primary key.
        created = store.insert_run_if_absent(
            session,
            {
                "id": run_id,
                "project": payload.project,
                "name": payload.name or run_id,
                "status": "running",
                "config": payload.config,
                "tags": list(payload.tags),
                "system": payload.system,
                "layers": [],
                "ranks": {},
                "setup": {},
                "agent_findings": {},
                "created_at": now,
                "started_at": started_at if started_at is not None else now,
                "ended_at": None,
                "updated_at": now,
                "last_seq": 0,
                "last_seen_at": now,
            },
        )
        run = require_run(session, run_id, for_update=True)
        if not created:
            run.project = payload.project
            run.name = payload.name or run.name
            run.config = payload.config
            run.tags = list(payload.tags)
            run.system = payload.system
            if started_at is not None:
                run.started_at = started_at
            run.updated_at = run.last_seen_at = now
        return run_out(session, run)


def declare_layers(db: Database, *, run_id: str, payload: LayersDeclare) -> RunOut:
    """Record the model's parameter names in model order (heatmap rows, per-layer series)."""
    check_wire_version(payload.wire_version)
    for i, layer in enumerate(payload.layers):
        if not layer or len(layer) > 512:
            raise InvalidPayloadError(
                f"layers[{i}] must be 1 to 512 characters, got {layer!r:.80}",
                errors=[{"loc": ["body", "layers", i], "msg": "must be 1 to 512 characters"}],
            )
    with db.transaction() as session:
        run = require_run(session, run_id, for_update=True)
        run.layers = list(dict.fromkeys(payload.layers))
        run.updated_at = run.last_seen_at = time.time()
        return run_out(session, run)


MAX_RANK = 1 << 20


def declare_rank(db: Database, *, run_id: str, rank: int, payload: RankDeclare) -> RunOut:
    """Record one rank's host and process in a distributed run (idempotent per rank)."""
    check_wire_version(payload.wire_version)
    with db.transaction() as session:
        # The ranks of a job declare at the same moment, and this is a read-modify-write: take
        # the run's write lock before the read (SQLite reads outside it, and ignores FOR UPDATE).
        store.touch_run(session, run_id=run_id, now=time.time())
        run = require_run(session, run_id)
        run.ranks = {**run.ranks, str(rank): payload.system}  # a new dict: JSON change tracked
        return run_out(session, run)


def finish_run(db: Database, *, run_id: str, payload: RunFinish) -> RunOut:
    """Set the run's final status and end time."""
    check_wire_version(payload.wire_version)
    if payload.status not in FINAL_STATUSES:
        raise InvalidPayloadError(
            f"status must be one of {', '.join(FINAL_STATUSES)}, got {payload.status!r}",
            errors=[{"loc": ["body", "status"], "msg": f"must be one of {FINAL_STATUSES}"}],
        )
    ended_at = _unix("ended_at", payload.ended_at)
    now = time.time()
    with db.transaction() as session:
        run = require_run(session, run_id, for_update=True)
        run.status = payload.status
        run.ended_at = ended_at if ended_at is not None else now
        run.updated_at = run.last_seen_at = now
        return run_out(session, run)


def get_run(db: Database, *, run_id: str, grace_seconds: float | None = None) -> RunOut:
    """One run; with ``grace_seconds``, a running run silent that long reads as ``crashed``."""
    cutoff = None if grace_seconds is None else liveness.silent_before(grace_seconds)
    with db.reader() as session:
        return run_out(session, require_run(session, run_id), silent_before=cutoff)


_SORTS = ("created_at", "name", "status")
_METRIC = re.compile(r"^(?P<name>[^<>=]+)(?P<op><=|>=|<|>|=)(?P<value>[^<>=]+)$")


def _bad(param: str, detail: str) -> InvalidPayloadError:
    return InvalidPayloadError(detail, errors=[{"loc": ["query", param], "msg": detail}])


def _json_scalar(text: str) -> object:
    # A value that parses as a JSON scalar is that scalar (0.1, true, null, "quoted"); anything
    # else is the string itself, so config=optimizer.name:adamw needs no quotes.
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text
    return value if not isinstance(value, (dict, list)) else text


def _dotted(param: str, key: str) -> tuple[str, ...]:
    parts = tuple(key.split("."))
    if not key or any(not p or len(p) > 128 or '"' in p for p in parts):
        raise _bad(param, f"{param} key {key!r:.80} must be dotted names, e.g. optimizer.lr")
    return parts


def parse_run_query(
    *,
    project: str | None,
    status: str | None,
    tags: list[str],
    config: list[str],
    metrics: list[str],
    sort: str,
) -> listing.RunQuery:
    """A run listing's filters and order from query parameters (422 naming the parameter)."""
    if status is not None and status not in RUN_STATUSES:
        raise _bad("status", f"status must be one of {', '.join(RUN_STATUSES)}, got {status!r:.40}")
    config_filters = []
    for item in config:
        key, sep, value = item.partition(":")
        if not sep:
            raise _bad("config", f"config filter {item!r:.80} must be <dotted.key>:<value>")
        config_filters.append((_dotted("config", key), _json_scalar(value)))
    metric_filters: list[tuple[str, str, float]] = []
    for item in metrics:
        match = _METRIC.match(item)
        number = math.nan
        if match is not None:
            try:
                number = float(match["value"])
            except ValueError:
                pass
        if match is None or math.isnan(number):
            raise _bad(
                "metric",
                f"metric filter {item!r:.80} must be <name><op><number> with op one of "
                "<, <=, >, >=, =; e.g. loss/train<0.5",
            )
        metric_filters.append((str(match["name"]), str(match["op"]), number))
    descending = sort.startswith("-")
    field = sort[1:] if descending else sort
    kind, _, key = field.partition(":")
    if field in _SORTS:
        sort_key: tuple[str, ...] = ()
    elif kind == "config" and key:
        sort_key = _dotted("sort", key)
    elif kind == "metric" and key:
        sort_key = (key,)
    else:
        raise _bad(
            "sort",
            f"sort {sort!r:.80} must be one of created_at, name, status, config:<dotted.key>, "
            "metric:<name>, optionally prefixed with - for descending",
        )
    return listing.RunQuery(
        project=project,
        status=status,
        tags=tuple(tags),
        config=tuple(config_filters),
        metrics=tuple(metric_filters),
        sort=field if field in _SORTS else kind,
        sort_key=sort_key,
        descending=descending,
    )


def _cursor_value(value: object) -> object:
    # Cursors are JSON: non-finite sort values (a NaN metric) travel as tokens.
    if isinstance(value, float) and not math.isfinite(value):
        return {"f": finite_or_token(value)}
    return value


def _value_from_cursor(value: object) -> object:
    if isinstance(value, dict) and set(value) == {"f"}:
        return float(str(value["f"]).replace("Infinity", "inf"))
    return value


def _encode_cursor(sort: str, value: object, run_id: str) -> str:
    raw = orjson.dumps([sort, value is None, _cursor_value(value), run_id])
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _sort_value(kind: str, value: object) -> object:
    """A cursor's sort value, checked against what the sort ``kind`` can hold (a hand-made
    cursor must not reach the database with a value of another type or unstorable text)."""
    if value is None:
        return None
    if kind in ("created_at", "metric"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("the sort value must be a number")
        return float(value)
    if kind in ("name", "status"):
        if not isinstance(value, str) or unstorable_text(value) is not None:
            raise ValueError("the sort value must be text")
        return value
    check_json_value(["query", "cursor"], value, max_depth=MAX_BODY_DEPTH)  # config: JSON
    if isinstance(value, int) and not isinstance(value, bool):
        check_int64(["query", "cursor"], value)
    return value


def _decode_cursor(cursor: str, sort: str, kind: str) -> tuple[bool, object, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        cursor_sort, missing, value, run_id = orjson.loads(raw)
        if cursor_sort != sort or not isinstance(missing, bool) or not isinstance(run_id, str):
            raise ValueError("cursor fields do not match this listing")
        if unstorable_text(run_id) is not None:
            raise ValueError("the cursor's run id is not one this server stores")
        return missing, _sort_value(kind, _value_from_cursor(value)), run_id
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError, InvalidPayloadError):
        raise _bad(
            "cursor",
            f"cursor {cursor!r:.80} is not one this server issued for this sort: "
            "pass next_cursor unchanged, with the same sort",
        ) from None


def list_runs(
    db: Database,
    *,
    project: str | None = None,
    status: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
    tags: list[str] | None = None,
    config: list[str] | None = None,
    metrics: list[str] | None = None,
    sort: str = "-created_at",
    grace_seconds: float | None = None,
) -> RunPage:
    """Runs filtered and sorted (newest first by default), one page at a time.

    With ``grace_seconds``, a running run silent that long reads as ``crashed`` in the answer,
    the ``status`` filter and the status sort alike (one cutoff for the whole page).
    """
    if not 1 <= limit <= MAX_PAGE:
        raise _bad("limit", f"limit must be between 1 and {MAX_PAGE}, got {limit}")
    query = parse_run_query(
        project=project,
        status=status,
        tags=tags or [],
        config=config or [],
        metrics=metrics or [],
        sort=sort,
    )
    if grace_seconds is not None:
        query = dataclasses.replace(query, silent_before=liveness.silent_before(grace_seconds))
    after = _decode_cursor(cursor, sort, query.sort) if cursor else None
    with db.reader() as session:
        rows = listing.list_runs(session, query, after=after, limit=limit + 1)
        page = rows[:limit]
        shown = store.shown_series(session, [item.run for item in page])
    runs = [
        _run_out(item.run, shown[item.run.id], query.silent_before, item.latest) for item in page
    ]
    next_cursor = None
    if len(rows) > limit:
        next_cursor = _encode_cursor(sort, page[-1].sort_value, page[-1].run.id)
    return RunPage(runs=runs, next_cursor=next_cursor)


def delete_run(db: Database, *, run_id: str) -> None:
    """Delete the run and everything it owns."""
    with db.transaction() as session:
        if not store.delete_run(session, run_id):
            raise RunNotFoundError(f"run {run_id!r} does not exist")


def list_series(db: Database, *, run_id: str) -> SeriesList:
    """Every series of the run with its summary, by name."""
    with db.reader() as session:
        require_run(session, run_id)
        rows = store.series_of_runs(session, [run_id])
    return SeriesList(
        series=[
            SeriesOut(
                name=r.name,
                count=r.count,
                first_step=r.first_step,
                last_step=r.last_step,
                last_value=stored_last_value(r),
                min_value=finite_or_none(r.min_value),
                max_value=finite_or_none(r.max_value),
                first_nonfinite_step=r.first_nonfinite_step,
            )
            for r in rows
        ]
    )
