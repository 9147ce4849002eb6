"""A whole series read from both storage forms: its chunks and its rows of blocks, merged.

Pieces are taken in ingest order (sequence, then id; a block's id is negated), so the later write
of a re-logged step wins whichever form held each write.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from sqlalchemy.orm import Session

from trickscope_server.downsample import dedupe_latest
from trickscope_server.services._chunks import decode_origins
from trickscope_server.services._convert import F64, I64
from trickscope_server.storage import blocks as block_store
from trickscope_server.storage import chunks as chunk_store

Columns = tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]


def series_columns(
    session: Session,
    *,
    run_id: str,
    series_id: int,
    name: str,
    cursor: int | None = None,
    blocks: list[block_store.Block] | None = None,
) -> Columns:
    """(steps, values, times) of a series as of ``cursor``: sorted by step, later write kept.

    ``blocks``: the series' family's blocks when the caller already read them.
    """
    pieces: list[tuple[int, int, NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]]
    pieces = []
    for c in chunk_store.series_chunk_data(session, series_id=series_id, cursor=cursor):
        steps = np.frombuffer(c.steps, dtype=I64)
        values = np.frombuffer(c.values, dtype=F64)
        times = np.frombuffer(c.times or b"", dtype=F64)
        if cursor is not None and c.seq > cursor:  # compacted after the cursor: its snapshot
            keep = decode_origins(c.origins, seq=c.seq, count=steps.size) <= cursor
            steps, values, times = steps[keep], values[keep], times[keep]
        pieces.append((c.seq, c.id, steps, values, times))
    if blocks is None:
        slices = block_store.series_slices(
            session, run_id=run_id, name=name, series_id=series_id, cursor=cursor
        )
    else:
        slices = block_store.slices_of(
            [b for b in blocks if cursor is None or b.seq <= cursor], series_id
        )
    pieces.extend((s.seq, s.id, s.steps, s.values, s.times) for s in slices)
    if not pieces:
        return np.empty(0, I64), np.empty(0, F64), np.empty(0, F64)
    pieces.sort(key=lambda p: (p[0], p[1]))
    steps, values, times = dedupe_latest(
        np.concatenate([p[2] for p in pieces]),
        np.concatenate([p[3] for p in pieces]),
        np.concatenate([p[4] for p in pieces]),
    )
    return steps, values, times
