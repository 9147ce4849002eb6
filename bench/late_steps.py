"""Server CPU of a batch whose steps come before stored ones, as a run's history grows.

    python bench/late_steps.py [--db URL] [--sizes 100 1000 3000 10000]

``watch`` sends a due step's ``grad_norm/total`` with the statistics every 5 s, after the logged
scalars of the steps past it: that series gets a batch "behind" its stored steps at every
statistics flush. One series, in process against a real store (a SQLite file by default): the
scalars path stores 27 non-due steps per batch (compacted as the ingest route compacts), then a
batch of the 6 due steps behind them arrives. Reported per history size, the median of 5: the
ingest CPU of that batch as the server does it (checked against the series' chunks: new steps,
merged), and with every batch that reaches back recounted from the series' points (what the
server did before; a step logged again is still recounted so).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

from trickscope_server.services import compact, summaries
from trickscope_server.services.ingest import ingest_batch, parse_batch
from trickscope_server.services.runs import upsert_run
from trickscope_server.storage import Database, upgrade_database
from trickscope_wire import PointBatch, RunCreate, SeriesColumns, dumps, encode_f64, encode_i64

NAME = "grad_norm/total"
EVERY = 10  # watch's default cadence: steps 0, 10, 20, ... are due


def _body(steps: list[int]) -> bytes:
    ones = encode_f64([1.0] * len(steps))
    columns = SeriesColumns(NAME, encode_i64(steps), ones, ones)
    return dumps(PointBatch(uuid.uuid4().hex, [columns]))


class History:
    """One run's ``grad_norm/total``: non-due steps from the scalars path, due ones late."""

    def __init__(self, db: Database, run_id: str) -> None:
        self.db, self.run_id, self.step = db, run_id, 0

    def _ingest(self, steps: list[int]) -> float:
        began = time.process_time()
        out = ingest_batch(
            self.db, run_id=self.run_id, batch=parse_batch(_body(steps), max_points=10**7)
        )
        spent = time.process_time() - began
        if out.compact:  # as the ingest route does once it has answered
            compact.compact_series(self.db, series_ids=out.compact)
        return spent

    def grow(self, batches: int) -> None:
        for _ in range(batches):
            self._ingest([s for s in range(self.step, self.step + 30) if s % EVERY])
            self.step += 30

    def late_batch(self) -> float:
        """The due steps of the last 60 steps, behind the stored ones: the ingest CPU."""
        return self._ingest([s for s in range(self.step - 60, self.step) if s % EVERY == 0])


def measure(history: History, recount_all: bool) -> float:
    """Median ingest CPU of 5 late batches, each behind 60 new steps."""
    real: Callable[..., Any] = summaries._overwritten
    spent = []
    for _ in range(5):
        history.grow(2)
        if recount_all:
            summaries._overwritten = lambda _session, behind, _families: list(behind)
        try:
            spent.append(history.late_batch())
        finally:
            summaries._overwritten = real
    return statistics.median(spent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", help="SQLAlchemy URL of an empty store (default: a SQLite file)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 3000, 10000],
                        help="history sizes, in batches of the scalars path")  # fmt: skip
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        url = args.db or f"sqlite:///{scratch}/late.db"
        upgrade_database(url)
        db = Database(url)
        run_id = uuid.uuid4().hex
        upsert_run(db, run_id=run_id, payload=RunCreate("bench", "late-steps"))
        history = History(db, run_id)
        print("| points stored (scalars path) | a late batch, now | recounted (before) |")
        print("|---:|---:|---:|")
        for size in sorted(args.sizes):
            history.grow(max(0, size - history.step // 30))
            now, before = measure(history, False), measure(history, True)
            stored = history.step - history.step // EVERY
            print(f"| {stored:,} | {1000 * now:.2f} ms | {1000 * before:.2f} ms |", flush=True)
        db.dispose()


if __name__ == "__main__":
    main()
