"""Live reads: the points stored after a cursor, each sent once whatever compaction did since."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from trickscope_server.services import liveness
from trickscope_server.services._chunks import decode_origins
from trickscope_server.services._convert import F64, I64, json_values
from trickscope_server.storage import Database, Session
from trickscope_server.storage import blocks as block_store
from trickscope_server.storage import chunks as chunk_store
from trickscope_server.storage import runs as run_store


@dataclass(frozen=True, slots=True)
class EventPage:
    """What a live read found after its cursor."""

    cursor: int  # the new cursor: every point up to it is in ``series``
    series: dict[str, dict[str, list[Any]]]  # columns by series name, in ingest order
    status: str  # the run's status as shown (liveness judged)
    complete: bool  # nothing was stored after ``cursor`` when the read ran


def read_event_page(
    db: Database, *, run_id: str, after: int, limit: int, grace_seconds: float | None = None
) -> EventPage | None:
    """Points stored after the cursor, at most ``limit`` stored pieces' worth, grouped by series.

    The status is judged for liveness with ``grace_seconds`` (see ``services/liveness.py``).
    ``complete`` tells a reader that it caught up, so it need not read again to find out.

    Each point is sent once, by the ingest sequence of the batch that brought it, whether it still
    sits in its fresh chunk or was compacted since. None when the run no longer exists.
    """
    with db.reader() as session:
        run = run_store.get_run(session, run_id)
        if run is None:
            return None
        cutoff = None if grace_seconds is None else liveness.silent_before(grace_seconds)
        status = liveness.shown_status(run.status, run.last_seen_at, cutoff)
        cursor, pieces, complete = _pieces_after(session, run_id=run_id, after=after, limit=limit)
    grouped: dict[str, tuple[list[NDArray[np.int64]], list[NDArray[np.float64]]]] = defaultdict(
        lambda: ([], [])
    )
    for name, steps, values in pieces:
        grouped[name][0].append(steps)
        grouped[name][1].append(values)
    series = {
        name: {
            "step": np.concatenate(steps_parts).tolist(),
            "value": json_values(np.concatenate(values_parts)),
        }
        for name, (steps_parts, values_parts) in grouped.items()
    }
    return EventPage(cursor, series, status, complete)


def read_events(
    db: Database, *, run_id: str, after: int, limit: int, grace_seconds: float | None = None
) -> tuple[int, dict[str, dict[str, list[Any]]], str] | None:
    """:func:`read_event_page` as (new cursor, series columns, status); None without the run."""
    page = read_event_page(db, run_id=run_id, after=after, limit=limit, grace_seconds=grace_seconds)
    return None if page is None else (page.cursor, page.series, page.status)


def _pieces_after(
    session: Session, *, run_id: str, after: int, limit: int
) -> tuple[int, list[tuple[str, NDArray[np.int64], NDArray[np.float64]]], bool]:
    """(hi, [(name, steps, values)], complete): the points of sequence in (after, hi], in ingest
    order.

    ``hi`` is the sequence of the ``limit``-th stored piece (chunk or block) after ``after``, or
    the newest; ``complete`` when fewer than ``limit`` pieces lie after ``after`` (so none after
    ``hi``).
    """
    seqs = sorted(
        chunk_store.chunk_seqs_after(session, run_id=run_id, after=after, limit=limit)
        + block_store.block_seqs_after(session, run_id=run_id, after=after, limit=limit)
    )
    complete = len(seqs) < limit  # each list holds at most ``limit``: neither was cut short
    seqs = seqs[:limit]
    if not seqs:
        return after, [], complete
    hi = seqs[-1]
    out: list[tuple[int, int, str, NDArray[np.int64], NDArray[np.float64]]] = []
    for name, steps_raw, values_raw, origins, seq, chunk_id in chunk_store.chunks_between(
        session, run_id=run_id, after=after, hi=hi
    ):
        steps = np.frombuffer(steps_raw, dtype=I64)
        values = np.frombuffer(values_raw, dtype=F64)
        if origins is not None:
            origin = decode_origins(origins, seq=seq, count=steps.size)
            keep = (origin > after) & (origin <= hi)
            steps, values = steps[keep], values[keep]
        if steps.size:
            out.append((seq, chunk_id, name, steps, values))
    blocks = block_store.blocks_between(session, run_id=run_id, after=after, hi=hi)
    names: dict[str, dict[int, str]] = {}
    for block in blocks:
        family_names = names.get(block.family)
        if family_names is None:
            family_names = names[block.family] = block_store.names_of_family(
                session, run_id=run_id, family=block.family
            )
        for row, sid in enumerate(block.members.tolist()):
            out.append((block.seq, -block.id, family_names[sid], block.steps, block.values[row]))
    out.sort(key=lambda p: (p[0], p[1]))
    return hi, [(name, steps, values) for _, _, name, steps, values in out], complete
