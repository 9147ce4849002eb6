"""Compaction: a series' runs of small consecutive chunks merged into chunks of thousands of points.

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

from trickscope_server.services._chunks import F64, I64, Part, decode_origins, merge
from trickscope_server.storage import Database
from trickscope_server.storage import points as store

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


def _compact_one(db: Database, series_id: int) -> int:
    with db.transaction() as session:
        run_id = store.series_run(session, series_id=series_id)
        if run_id is None:
            return 0  # the run was deleted meanwhile
        groups = plan(store.series_chunk_layout(session, series_id=series_id))
        merged = 0
        for group in groups:
            ids = [c[0] for c in group]
            data = store.chunk_data(session, ids=ids, times=True)
            if len(data) != len(ids):
                raise _Raced
            parts = []
            for c in data:
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
            row = merge(parts, run_id=run_id, series_id=series_id, seq_lo=min(c[2] for c in group))
            if not store.replace_chunks(session, ids=ids, row=row):
                raise _Raced
            merged += len(ids)
        store.set_pending(session, series_id=series_id, pending=0)
    return merged


def compact_series(db: Database, *, series_ids: list[int]) -> int:
    """Compact these series (skipping any this process is already compacting); chunks merged."""
    merged = 0
    for series_id in series_ids:
        with _busy_lock:
            if series_id in _busy:
                continue
            _busy.add(series_id)
        try:
            merged += _compact_one(db, series_id)
        except _Raced:
            log.debug("compaction of series %s raced another one; it will retry later", series_id)
        finally:
            with _busy_lock:
                _busy.discard(series_id)
    return merged


def compact_run(db: Database, *, run_id: str) -> int:
    """Compact every series of a run now, whatever its pending count; chunks merged."""
    with db.reader() as session:
        ids = [sid for sid, _ in store.series_ids_of_run(session, run_id=run_id)]
    return compact_series(db, series_ids=ids)
