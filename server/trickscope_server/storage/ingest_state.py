"""What ingest knows of a run between its batches, kept in process: the reads a batch would
otherwise make of its run before writing (which steps are stored, the block summaries, the
chunk and block counts that make compaction due).

Exact across processes (several workers on one PostgreSQL database): every batch of a run takes
the run's next sequence number under the run's row lock (``points.next_seq``), and only batches
change what is kept here (row summaries, block summaries). A state saved after this process
committed sequence ``s`` therefore still describes the database when this process takes
``s + 1``; any other sequence means another process wrote in between, and the state is dropped
and read again. Compaction changes none of it but the counts, which only decide when to compact
(a count too high compacts a little early; the compaction plans from the rows themselves).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from numpy.typing import NDArray


@dataclass
class RunState:
    """One run's ingest state as of sequence ``seq`` (``-1``: read nothing yet)."""

    seq: int = -1
    # Series id -> the last step held by the series' own row (None: no points yet), for the
    # series looked up so far.
    row_last: dict[int, int | None] = field(default_factory=dict)
    # Series id -> chunks stored since its last compaction (known for the ids in row_last).
    pending: dict[int, int] = field(default_factory=dict)
    # The run's block summary records (``storage/block_summaries.RECORD``) and whether the run
    # has their row; None until read.
    records: NDArray[Any] | None = None
    records_stored: bool = False
    # Statistic (family) -> blocks stored since its last compaction; None until read.
    blocks: dict[str, int] | None = None


class RunStateCache:
    """The :class:`RunState` of recently written runs, keyed by (run id, ``created_at``): a run
    deleted and created again under the same id is another run (and starts again at sequence 1),
    so a deleted run's state is never served. Thread-safe; at most ``runs`` runs kept."""

    def __init__(self, runs: int = 64) -> None:
        self._runs = runs
        self._states: OrderedDict[tuple[str, float], RunState] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, run_id: str, created_at: float, seq: int) -> RunState:
        """The run's state for the batch of sequence ``seq``: the saved one when it was saved at
        ``seq - 1`` (taken out of the cache: a batch that fails leaves nothing half-changed
        behind), else a new empty one."""
        with self._lock:
            state = self._states.pop((run_id, created_at), None)
        if state is None or state.seq != seq - 1:
            return RunState()
        return state

    def save(self, run_id: str, created_at: float, seq: int, state: RunState) -> None:
        """Keep ``state`` as of sequence ``seq``; call once the batch has committed."""
        state.seq = seq
        key = (run_id, created_at)
        with self._lock:
            known = self._states.get(key)
            if known is not None and known.seq > seq:
                return  # a later batch's state was saved first
            self._states[key] = state
            self._states.move_to_end(key)
            while len(self._states) > self._runs:
                self._states.popitem(last=False)
