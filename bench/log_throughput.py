"""What one ``run.log`` call costs in a tight loop, the agent's memory for a million points, and
whether every point logged is stored: trickscope against a real server, TensorBoard beside it.

    python bench/log_throughput.py [--points 1000000]

Each writer logs ``{"x": float(s)}`` at step ``s`` for ``--points`` steps as fast as the loop
goes. The cost per call is the median over blocks of 10,000 calls, also as a multiple of the same
loop calling a function that does nothing (what any Python call costs). Memory is a second, equal
pass under ``tracemalloc`` (every Python allocation of every thread: the agent's columns, its
batches and their encoding), from the writer's creation to its close, which includes the upload.
"Stored" is what the reader gets back: the server's point count for trickscope, the event file's
scalars for TensorBoard (``pip install -e '.[bench]'``; skipped with a note when absent).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import tempfile
import time
import tracemalloc
import urllib.request
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _peers import start_trickscope  # noqa: E402

BLOCK = 10_000


def noop(metrics: dict[str, float], step: int | None = None) -> None:
    """The plain loop's call: the dict and the call, nothing else."""


def timed_loop(log: Callable[..., None], points: int) -> float:
    """Median nanoseconds per call over blocks of ``BLOCK`` calls."""
    blocks = []
    clock = time.perf_counter_ns
    for start in range(0, points, BLOCK):
        began = clock()
        for s in range(start, min(points, start + BLOCK)):
            log({"x": float(s)}, step=s)
        blocks.append((clock() - began) / min(BLOCK, points - start))
    return statistics.median(blocks)


class Writer:
    """One tool: ``open`` a writer, ``log`` with it, ``close`` it, ``stored`` points read back."""

    name = ""

    def open(self) -> Callable[..., None]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def stored(self) -> int:
        raise NotImplementedError


class Trickscope(Writer):
    name = "trickscope run.log"

    def __init__(self, url: str, journal: Path) -> None:
        self.url, self.journal = url, journal

    def open(self) -> Callable[..., None]:
        import trickscope

        self.run = trickscope.init(project="bench-log", url=self.url, journal_dir=self.journal)
        return self.run.log

    def close(self) -> None:
        self.run.finish(timeout=120)

    def stored(self) -> int:
        url = f"{self.url}/api/v1/runs/{self.run.id}/points?name=x&points=3"
        with urllib.request.urlopen(url, timeout=60) as response:
            return int(json.loads(response.read())["total"])


class TensorBoard(Writer):
    name = "TensorBoard SummaryWriter.add_scalar"

    def __init__(self, logdir: Path) -> None:
        self.root = logdir
        self.count = 0

    def open(self) -> Callable[..., None]:
        from torch.utils.tensorboard import SummaryWriter

        self.count += 1
        self.logdir = self.root / str(self.count)
        self.writer = SummaryWriter(str(self.logdir))
        add = self.writer.add_scalar

        def log(metrics: dict[str, float], step: int | None = None) -> None:
            for key, value in metrics.items():
                add(key, value, step)

        return log

    def close(self) -> None:
        self.writer.close()

    def stored(self) -> int:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(self.logdir), size_guidance={"scalars": 0})
        events.Reload()
        return len(events.Scalars("x"))


def measure(writer: Writer, points: int) -> tuple[float, float, int]:
    """(median ns per call, peak MiB under tracemalloc, points stored)."""
    log = writer.open()
    cost = timed_loop(log, points)
    writer.close()
    stored = writer.stored()
    gc.collect()
    tracemalloc.start()
    log = writer.open()
    for s in range(points):
        log({"x": float(s)}, step=s)
    writer.close()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return cost, peak / 2**20, stored


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    args = parser.parse_args()
    import torch

    print(f"machine: {platform.platform()}, {platform.processor() or 'cpu'}, "
          f"Python {platform.python_version()}, torch {torch.__version__}")  # fmt: skip
    plain = timed_loop(noop, args.points)
    rows = [f"| plain loop (a call that does nothing) | {plain:.0f} | 1.0 | - | - |"]
    with tempfile.TemporaryDirectory() as scratch:
        server = start_trickscope(f"sqlite:///{Path(scratch) / 'bench.db'}")
        writers: list[Writer] = [Trickscope(server.url, Path(scratch) / "journal")]
        try:
            import tensorboard  # noqa: F401

            writers.append(TensorBoard(Path(scratch) / "tb"))
        except ImportError:
            print("note: tensorboard is not installed (pip install -e '.[bench]'); skipped")
        try:
            for writer in writers:
                cost, peak, stored = measure(writer, args.points)
                rows.append(
                    f"| {writer.name} | {cost:.0f} | {cost / plain:.1f} | {peak:.1f} MiB | "
                    f"{stored:,} / {args.points:,} |"
                )
        finally:
            server.stop()
    print(f"points per writer: {args.points:,} (one series, a float per call)")
    print("| writer | median ns per call | x plain loop | peak memory (tracemalloc) "
          "| stored / logged |")  # fmt: skip
    print("|---|---:|---:|---:|---:|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
