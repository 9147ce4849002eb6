"""Ingest bookkeeping: the run's sequence, batch ids, and the series dictionary.

Points themselves live in ``storage/chunks.py`` (per series) and ``storage/blocks.py`` (per
statistic and batch); see docs/architecture.md, Storage.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import orjson
from numpy.typing import NDArray
from sqlalchemy import Table, bindparam, select
from sqlalchemy.orm import Session

from trickscope_server.storage.models import RunRow, SeriesRow
from trickscope_server.storage.runs import IN_CHUNK, insert_ignore
from trickscope_server.storage.transaction import WriteTransaction

_series = cast(Table, SeriesRow.__table__)
_c = _series.c
_runs = cast(Table, RunRow.__table__)


def next_seq(
    tx: WriteTransaction, *, run_id: str, now: float
) -> tuple[int, float, float | None] | None:
    """Take the run's next ingest sequence number (and stamp ``updated_at`` and ``last_seen_at``);
    None without the run. SQLite's form (PostgreSQL's is one statement in :func:`start_batch`).

    Returns the sequence number, the run's ``created_at``, which tells a run apart from one
    deleted and created again under the same id (see :class:`SeriesIdCache`), and its
    ``followed_until``.
    """
    row = tx.execute(_SQLITE_NEXT_SEQ, (now, now, run_id)).fetchone()
    return None if row is None else (int(row[0]), float(row[1]), row[2])


# The statements of every batch go straight to the driver (storage/transaction.py). last_seen_at
# rides on the UPDATE: liveness costs the ingest path no statement of its own.
_SQLITE_NEXT_SEQ = (
    "UPDATE runs SET last_seq = last_seq + 1, updated_at = ?, last_seen_at = ? WHERE id = ? "
    "RETURNING last_seq, created_at, followed_until"
)
# RETURNING tells a new batch id from a duplicate; ON CONFLICT DO NOTHING: two writers may race
# on one batch, and the loser must not abort its transaction.
_SQLITE_RECORD_BATCH = (
    "INSERT INTO batches (run_id, batch_id, points, received_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT DO NOTHING RETURNING batch_id"
)


def run_seq(session: Session, *, run_id: str) -> int:
    """The run's ingest sequence: every batch at or below it is committed and visible."""
    value = session.scalar(select(RunRow.last_seq).where(RunRow.id == run_id))
    return int(value or 0)


def record_batch(
    tx: WriteTransaction, *, run_id: str, batch_id: str, points: int, now: float
) -> bool:
    """Record a batch id; False when the run already has it (the batch is a duplicate).
    SQLite's form (PostgreSQL's is part of :func:`start_batch`'s statement)."""
    values = (run_id, batch_id, points, now)
    return tx.execute(_SQLITE_RECORD_BATCH, values).fetchone() is not None


_LAYOUTS_PER_RUN = 256


class SeriesIdCache:
    """Series ids of recently written runs, so a batch does not look up thousands of names.

    A series keeps its id for its run's lifetime; a run deleted and created again under the same
    id has a new ``created_at``, so entries are keyed by both and a stale id is never served.
    Only ids from committed transactions may be added. Thread-safe; at most ``runs`` runs kept.
    """

    def __init__(self, runs: int = 256) -> None:
        self._runs = runs
        self._entries: OrderedDict[tuple[str, float], dict[str, int]] = OrderedDict()
        # Per run, the member ids of block layouts seen: a block of a known layout looks up
        # one key instead of each of its names.
        self._layouts: dict[tuple[str, float], dict[Hashable, NDArray[np.int64]]] = {}
        self._lock = threading.Lock()

    def members(self, run_id: str, created_at: float, layout: Hashable) -> NDArray[np.int64] | None:
        """The member ids of a block layout of the run, when known."""
        with self._lock:
            return self._layouts.get((run_id, created_at), {}).get(layout)

    def add_members(
        self, run_id: str, created_at: float, layout: Hashable, ids: NDArray[np.int64]
    ) -> None:
        """Remember the committed member ids of a block layout of the run."""
        with self._lock:
            key = (run_id, created_at)
            if key in self._entries:
                layouts = self._layouts.setdefault(key, {})
                if len(layouts) >= _LAYOUTS_PER_RUN:
                    layouts.clear()
                layouts[layout] = ids

    def lookup(
        self, run_id: str, created_at: float, names: Sequence[str]
    ) -> tuple[dict[str, int], list[str]]:
        """The known ids of these names (each once), and the names not known."""
        found: dict[str, int] = {}
        missing: list[str] = []
        with self._lock:
            known = self._entries.get((run_id, created_at))
            if known is not None:
                self._entries.move_to_end((run_id, created_at))
        get = (known or {}).get
        for name in dict.fromkeys(names):
            sid = get(name)
            if sid is None:
                missing.append(name)
            else:
                found[name] = sid
        return found, missing

    def add(self, run_id: str, created_at: float, ids: dict[str, int]) -> None:
        """Remember committed ids of the run's series."""
        with self._lock:
            key = (run_id, created_at)
            self._entries.setdefault(key, {}).update(ids)
            self._entries.move_to_end(key)
            while len(self._entries) > self._runs:
                gone, _ = self._entries.popitem(last=False)
                self._layouts.pop(gone, None)


def ensure_series(
    tx: WriteTransaction,
    *,
    run_id: str,
    names: Sequence[str],
    cache: tuple[SeriesIdCache, float] | None = None,
) -> dict[str, int]:
    """Ids of the run's series with these names, creating the missing ones.

    ``cache``: a :class:`SeriesIdCache` and the run's ``created_at``; only the names it does not
    know are looked up.
    """
    if cache is not None:
        ids, unique = cache[0].lookup(run_id, cache[1], names)
    else:
        ids, unique = {}, list(dict.fromkeys(names))
    if unique and tx.dialect == "postgresql":
        # One statement creates the missing and reads the existing; a name another transaction
        # created meanwhile is in neither (its row is newer than the statement's snapshot) and
        # is read below.
        values = {"run": run_id, "names": unique}
        rows = tx.execute(_PG_ENSURE_SERIES, values).fetchall()
        ids.update({str(name): int(sid) for name, sid in rows})
        unique = [name for name in unique if name not in ids]
    if unique:
        _create_series(tx.session, run_id, unique, ids)
    return ids


def _create_series(session: Session, run_id: str, unique: list[str], ids: dict[str, int]) -> None:
    """Add to ``ids`` those of ``unique`` (names of the run's series), created if missing."""
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


_PG_ENSURE_SERIES = """
WITH wanted AS (SELECT unnest(%(names)b::text[]) AS name),
created AS (
    INSERT INTO series (run_id, name, count) SELECT %(run)s, name, 0 FROM wanted
    ON CONFLICT DO NOTHING RETURNING name, id
)
SELECT name, id FROM created
UNION ALL
SELECT s.name, s.id FROM series AS s JOIN wanted AS w ON s.name = w.name WHERE s.run_id = %(run)s
"""


def get_series(session: Session, *, run_id: str, name: str) -> SeriesRow | None:
    """The run's series with this name, or None."""
    return session.scalars(
        select(SeriesRow).where(SeriesRow.run_id == run_id, SeriesRow.name == name)
    ).first()


def series_ids_of_run(session: Session, *, run_id: str) -> list[tuple[int, str]]:
    """(id, name) of every series of the run, by name."""
    stmt = select(_c.id, _c.name).where(_c.run_id == run_id).order_by(_c.name)
    return [(int(i), str(n)) for i, n in session.execute(stmt)]


def series_runs_and_names(
    session: Session, *, series_ids: Sequence[int]
) -> dict[int, tuple[str, str]]:
    """{series id: (run id, name)} of those of these series that still exist."""
    out: dict[int, tuple[str, str]] = {}
    for start in range(0, len(series_ids), IN_CHUNK):
        part = list(series_ids[start : start + IN_CHUNK])
        stmt = select(_c.id, _c.run_id, _c.name).where(_c.id.in_(part))
        out.update((int(i), (str(r), str(n))) for i, r, n in session.execute(stmt))
    return out


def lock_run(session: Session, *, run_id: str) -> bool:
    """Take the run's row lock until the transaction ends, as a batch's ``next_seq`` does (on
    SQLite, where a write transaction excludes every other, nothing to take); False without the
    run. Compaction takes it first so that it and ingest lock series rows in one order (``FOR
    NO KEY UPDATE``: what the UPDATE of ``next_seq`` takes; rows referring to the run can still
    be inserted meanwhile)."""
    if session.get_bind().dialect.name != "postgresql":
        return True
    found = session.connection().execute(_LOCK_RUN, {"b_run": run_id}).first()
    return found is not None


_LOCK_RUN = (
    select(_runs.c.id).where(_runs.c.id == bindparam("b_run")).with_for_update(key_share=True)
)


def run_layers(tx: WriteTransaction, *, run_id: str) -> list[str]:
    """The run's declared layers (parameter names in model order). SQLite's form (PostgreSQL
    reads them in :func:`start_batch`'s statement)."""
    row = tx.execute("SELECT layers FROM runs WHERE id = ?", (run_id,)).fetchone()
    value = orjson.loads(row[0]) if row is not None and row[0] is not None else None
    return [str(layer) for layer in value] if isinstance(value, list) else []


@dataclass(frozen=True)
class BatchStart:
    """A batch's place in its run: sequence number, the run's ``created_at``, whether the batch
    id is new (False: a duplicate, to roll back), the run's layers (when asked for) and until
    when it is followed live (``runs.followed_until``)."""

    seq: int
    created_at: float
    fresh: bool
    layers: list[str]
    followed_until: float | None = None

    def followed(self, now: float) -> bool:
        """Whether someone follows the run live at ``now``."""
        return self.followed_until is not None and self.followed_until > now


def start_batch(
    tx: WriteTransaction,
    *,
    run_id: str,
    batch_id: str,
    points: int,
    now: float,
    layers: bool,
) -> BatchStart | None:
    """:func:`next_seq`, then :func:`record_batch` and (with ``layers``) :func:`run_layers`;
    None without the run. On PostgreSQL one statement and one round trip: the batch row is
    inserted from the run's updated row, so the run's row lock is still taken first."""
    if tx.dialect != "postgresql":
        taken = next_seq(tx, run_id=run_id, now=now)
        if taken is None:
            return None
        fresh = record_batch(tx, run_id=run_id, batch_id=batch_id, points=points, now=now)
        known = run_layers(tx, run_id=run_id) if layers and fresh else []
        return BatchStart(taken[0], taken[1], fresh, known, taken[2])
    values = {"run": run_id, "batch": batch_id, "points": points, "now": now}
    row = tx.execute(_PG_START[layers], values).fetchone()
    if row is None:
        return None
    found = row[4] if layers else None
    known = [str(layer) for layer in found] if isinstance(found, list) else []
    return BatchStart(int(row[0]), float(row[1]), bool(row[2]), known, row[3])


_PG_START_SQL = """
WITH run AS (
    UPDATE runs SET last_seq = last_seq + 1, updated_at = %(now)s, last_seen_at = %(now)s
    WHERE id = %(run)s RETURNING last_seq, created_at, followed_until{layers}
), batch AS (
    INSERT INTO batches (run_id, batch_id, points, received_at)
    SELECT %(run)s, %(batch)s, %(points)s, %(now)s FROM run
    ON CONFLICT DO NOTHING RETURNING 1
)
SELECT last_seq, created_at, EXISTS (SELECT 1 FROM batch), followed_until{layers} FROM run
"""
_PG_START = {
    False: _PG_START_SQL.format(layers=""),
    True: _PG_START_SQL.format(layers=", layers"),
}
