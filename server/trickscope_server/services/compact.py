"""Compaction: a series' runs of small consecutive chunks merged into chunks of thousands of points.

A family's blocks (per-layer statistics stored a batch at a time) are turned into one chunk per
member series first, which then compact like any other chunks.

The agent flushes every 0.5 s, so a long run stores many chunks of a few points each; reads would
then spend their time on rows rather than on points. Compaction merges consecutive small chunks
(in ingest order) of one series into one chunk, sorted by step with the later write of a re-logged
step kept, and with a digest for coarse reads. It never changes what a read returns:

- Only chunks consecutive in ingest order are merged, so "later write wins" between the merged
  chunk and any other chunk of the series still follows ingest order (the merged chunk takes the
  highest sequence of its sources as its own, and the lowest as ``seq_lo``).
- Each point keeps the ingest sequence of the batch that brought it (``origins``), so an SSE client
  resuming from any cursor gets exactly the points it has not seen, once (see ``read_events``).
- Deleting the sources and inserting the merged chunk is one transaction; a second compaction
  racing on the same chunks finds them gone and rolls back.
"""

from __future__ import annotations

import logging
import threading

import numpy as np

from trickscope_server.services._chunks import (
    F64,
    I64,
    Part,
    decode_origins,
    merge,
    merge_stacked,
)
from trickscope_server.storage import Database, Session
from trickscope_server.storage import blocks as block_store
from trickscope_server.storage import chunks as chunk_store
from trickscope_server.storage import points as store
from trickscope_server.storage import summaries as summary_store
from trickscope_server.storage.block_summaries import family_of

log = logging.getLogger("trickscope_server")

SMALL_CHUNK = 4096  # chunks with fewer points are merged
MAX_CHUNK = 16384  # a merged chunk holds at most this many points

_busy: set[int] = set()
_busy_lock = threading.Lock()


class _Raced(Exception):
    """Another compaction merged some of the same chunks first."""


def plan(layout: list[tuple[int, int, int, int]]) -> list[list[tuple[int, int, int, int]]]:
    """Groups of ≥ 2 consecutive small chunks, each ≤ ``MAX_CHUNK`` points.

    ``layout`` is (id, seq, seq_lo, count) per chunk in ingest order.
    """
    groups: list[list[tuple[int, int, int, int]]] = []
    current: list[tuple[int, int, int, int]] = []
    size = 0
    for chunk in layout:
        count = chunk[3]
        if count >= SMALL_CHUNK or size + count > MAX_CHUNK:
            if len(current) >= 2:
                groups.append(current)
            current, size = [], 0
            if count >= SMALL_CHUNK:
                continue
        current.append(chunk)
        size += count
    if len(current) >= 2:
        groups.append(current)
    return groups


def _parts(chunks: list[chunk_store.ChunkData]) -> list[Part]:
    parts = []
    for c in chunks:
        steps = np.frombuffer(c.steps, dtype=I64)
        parts.append(
            Part(
                seq=c.seq,
                steps=steps,
                values=np.frombuffer(c.values, dtype=F64),
                times=np.frombuffer(c.times or b"", dtype=F64),
                origins=decode_origins(c.origins, seq=c.seq, count=steps.size),
            )
        )
    return parts


def _compact_family(session: Session, *, run_id: str, family: str) -> int:
    """Turn the family's blocks into one chunk per member series; blocks turned.

    A member's chunk holds its rows of every block plus its chunks stored between its first and
    last block (in ingest order), so later-write-wins order is kept; each point keeps the
    sequence of its batch in ``origins``.
    """
    blocks = block_store.family_blocks(session, run_id=run_id, family=family)
    if not blocks:
        return 0
    members = np.unique(np.concatenate([b.members for b in blocks]))
    nearby = chunk_store.chunks_within(
        session, series_ids=members.tolist(), lo=blocks[0].seq, hi=blocks[-1].seq
    )
    if not nearby and _stackable(blocks):
        between: dict[int, list[tuple[int, chunk_store.ChunkData]]] = {}
        rows = merge_stacked(
            run_id=run_id,
            members=blocks[0].members,
            seqs=[b.seq for b in blocks],
            steps=[b.steps for b in blocks],
            times=[b.times for b in blocks],
            values=[b.values for b in blocks],
        )
    else:
        spans: dict[int, list[int]] = {}
        for block in blocks:
            for sid in block.members.tolist():
                span = spans.setdefault(sid, [block.seq, block.seq])
                span[1] = block.seq
        inside = {
            chunk_id: (sid, seq_lo)
            for chunk_id, sid, seq_lo, seq in nearby
            if spans[sid][0] <= seq_lo and seq <= spans[sid][1]
        }
        between = {}
        for chunk in chunk_store.chunk_data(session, ids=list(inside), times=True):
            sid, seq_lo = inside[chunk.id]
            between.setdefault(sid, []).append((seq_lo, chunk))
        rows = _merged_rows(run_id, blocks, spans, between)
    if block_store.delete_blocks(session, ids=[b.id for b in blocks]) != len(blocks):
        raise _Raced
    gone = [c.id for found in between.values() for _, c in found]
    if gone and not chunk_store.delete_chunks(session, ids=gone):
        raise _Raced
    chunk_store.insert_chunks(session, rows)
    summary_store.add_pending(session, series_ids=members.tolist())
    return len(blocks)


def _stackable(blocks: list[block_store.Block]) -> bool:
    """Whether the blocks share their members, in order, and their steps rise strictly from one
    to the next (the common case: one layout, a run going forward)."""
    first = blocks[0].members
    if any(b.members.size != first.size or not np.array_equal(b.members, first) for b in blocks):
        return False
    return all(int(a.steps[-1]) < int(b.steps[0]) for a, b in zip(blocks, blocks[1:], strict=False))


def _merged_rows(
    run_id: str,
    blocks: list[block_store.Block],
    spans: dict[int, list[int]],
    between: dict[int, list[tuple[int, chunk_store.ChunkData]]],
) -> list[dict[str, object]]:
    """Each member's compacted chunk row, member by member (any layout, any steps)."""
    rows = []
    for sid, (lo, _) in spans.items():
        parts = [
            Part(
                block.seq,
                block.steps,
                block.values[row],
                block.times,
                np.full(block.steps.size, block.seq, dtype=I64),
            )
            for block in blocks
            for row in np.flatnonzero(block.members == sid).tolist()
        ]
        found = between.get(sid, [])
        chunks = [c for _, c in found]
        keyed = [((p.seq, 0, i), p) for i, p in enumerate(parts)]
        keyed += [((c.seq, 1, c.id), p) for c, p in zip(chunks, _parts(chunks), strict=True)]
        ordered = [p for _, p in sorted(keyed, key=lambda kp: kp[0])]
        seq_lo = min([lo, *(low for low, _ in found)])
        rows.append(merge(ordered, run_id=run_id, series_id=sid, seq_lo=seq_lo))
    return rows


# Series compacted in one transaction: a batch's due series (a handful of metrics, one member
# per statistic family) share one run lock, one layout read and one commit; ``compact_run``
# goes through a run's thousands of series this many at a time, so ingest waits on none long.
SERIES_PER_TRANSACTION = 256


def _compact_group(db: Database, series_ids: list[int]) -> int:
    """Compact these series (of any runs) in one transaction; chunks merged and blocks turned."""
    with db.transaction() as session:
        found = store.series_runs_and_names(session, series_ids=series_ids)
        merged = 0
        for run_id in sorted({run for run, _ in found.values()}):
            # The run's lock first, as ingest takes it: ingest re-logging a step recounts series
            # rows that compaction updates too, and rows locked in two orders deadlocked on
            # PostgreSQL. Ingest of this run waits for the compaction (after its answer was sent).
            if not store.lock_run(session, run_id=run_id):
                continue  # the run was deleted meanwhile
            names = {sid: name for sid, (run, name) in found.items() if run == run_id}
            merged += _compact_run_series(session, run_id=run_id, names=names)
    return merged


def _compact_run_series(session: Session, *, run_id: str, names: dict[int, str]) -> int:
    """Compact these series of one run: their families' blocks first, then their chunks."""
    merged = 0
    # Families first, so that no block of a series lies between the chunks merged below. Most
    # names with a family part ("grad_norm/total") have no blocks: one query tells which do.
    families = {family_of(name) for name in names.values()} - {None}
    if families:
        stored = block_store.family_counts(session, run_id=run_id)
        for family in sorted(families & stored.keys()):
            merged += _compact_family(session, run_id=run_id, family=family)
    layouts = chunk_store.series_chunk_layouts(session, series_ids=list(names))
    groups = [(sid, group) for sid in names for group in plan(layouts.get(sid, []))]
    ids = [c[0] for _, group in groups for c in group]
    if ids:
        data = {c.id: c for c in chunk_store.chunk_data(session, ids=ids, times=True)}
        if len(data) != len(ids):
            raise _Raced
        rows = []
        for sid, group in groups:
            chunks = [data[c[0]] for c in group]
            seq_lo = min(c[2] for c in group)
            rows.append(merge(_parts(chunks), run_id=run_id, series_id=sid, seq_lo=seq_lo))
        if not chunk_store.delete_chunks(session, ids=ids):
            raise _Raced
        chunk_store.insert_chunks(session, rows)
        merged += len(ids)
    summary_store.reset_pending(session, series_ids=list(names))
    return merged


def compact_series(db: Database, *, series_ids: list[int]) -> int:
    """Compact these series (skipping any this process is already compacting); chunks merged."""
    with _busy_lock:
        claimed = [sid for sid in dict.fromkeys(series_ids) if sid not in _busy]
        _busy.update(claimed)
    merged = 0
    try:
        for start in range(0, len(claimed), SERIES_PER_TRANSACTION):
            group = claimed[start : start + SERIES_PER_TRANSACTION]
            try:
                merged += _compact_group(db, group)
            except _Raced:
                log.debug("compaction of series %s raced another one; it will retry later", group)
    finally:
        with _busy_lock:
            _busy.difference_update(claimed)
    return merged


def compact_run(db: Database, *, run_id: str) -> int:
    """Compact every series of a run now, whatever its pending count; chunks merged."""
    with db.reader() as session:
        ids = [sid for sid, _ in store.series_ids_of_run(session, run_id=run_id)]
    return compact_series(db, series_ids=ids)
