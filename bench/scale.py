"""The server at 10^8 points: ingest rate held across the load, reads and database size per point.

    python bench/scale.py --pg postgresql+psycopg://trickscope:trickscope@127.0.0.1:5432/trickscope_scale
    python bench/scale.py --sqlite /var/tmp/scale.db --runs 1      # a smaller SQLite load

One trickscope server on loopback, started by this script, receives ``--runs`` runs of
``--series`` series over ``--steps`` steps each (default 10 x 1,000 x 10,000 = 10^8 points)
through the real HTTP ingest, as bulk batches of ``--steps-per-batch`` steps of every series of
a run, from ``--clients`` concurrent clients. First a probe run gets one 1M-point series and
every load run its first batch (so every series exists: the run list reads the listed runs'
series); the probe's downsampled read and the run list are timed then and again after the load.
The ingest rate is compared between the first and the last tenth of the load's points, and the
database's size is divided by the points it holds. The PostgreSQL database should be empty and
the bench's own (drop it after: it holds GBs); the SQLite file is deleted unless ``--keep``.
"""

from __future__ import annotations

import argparse
import binascii
import json
import os
import platform
import statistics
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peers import Client, start_trickscope  # noqa: E402
from query import fill_long_series, timed  # noqa: E402

from trickscope_wire import RunCreate, dumps

PROBE_SERIES = "loss/train"
START_TIME = time.time()


@dataclass
class Load:
    """What the clients did: per stored batch, its completion time, points and latency."""

    started: float = 0.0
    done: list[tuple[float, int, float]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, points: int, seconds: float) -> None:
        with self.lock:
            self.done.append((time.perf_counter(), points, seconds))


def batch_body(series: int, first_step: int, steps: int, rng: np.random.Generator) -> bytes:
    """One bulk batch, every series of a run over ``steps`` steps, encoded with numpy.

    Encoding on the client takes a few percent of the server's time per batch, so the bodies are
    made as they are sent rather than held (10^8 points are ~3 GB of JSON).
    """
    step_col = binascii.b2a_base64(
        np.arange(first_step, first_step + steps, dtype="<i8").tobytes(), newline=False
    ).decode()
    # Wall times as a training loop makes them: ~0.1 s a step with jitter (they compress as
    # little as real ones; constant times would flatter the size per point).
    wall = START_TIME + 0.1 * np.arange(first_step, first_step + steps) + rng.random(steps) * 1e-3
    time_col = binascii.b2a_base64(wall.astype("<f8").tobytes(), newline=False).decode()
    values = rng.random((series, steps)).astype("<f8")
    columns = [
        {
            "name": f"grad_norm/blocks.{s}.weight",
            "steps": step_col,
            "values": binascii.b2a_base64(values[s].tobytes(), newline=False).decode(),
            "times": time_col,
        }
        for s in range(series)
    ]
    return json.dumps({"batch_id": uuid.uuid4().hex, "series": columns}).encode()


def post_batch(
    client: Client, run_id: str, first: int, args: argparse.Namespace, rng, load: Load
) -> None:
    steps = min(args.steps_per_batch, args.steps - first)
    body = batch_body(args.series, first, steps, rng)
    start = time.perf_counter()
    client.request("POST", f"/api/v1/runs/{run_id}/points", body)
    load.record(args.series * steps, time.perf_counter() - start)


def create_runs(url: str, args: argparse.Namespace, seed: Load) -> list[str]:
    """The load's runs, each with its first batch: every series exists before the start reads,
    so that start and end differ in points, not in series (the run list reads series)."""
    client = Client(url)
    rng = np.random.default_rng(0)
    run_ids = [uuid.uuid4().hex for _ in range(args.runs)]
    for i, run_id in enumerate(run_ids):
        client.request(
            "PUT", f"/api/v1/runs/{run_id}", dumps(RunCreate(project="scale", name=f"load-{i}"))
        )
        post_batch(client, run_id, 0, args, rng, seed)
    return run_ids


def run_load(url: str, run_ids: list[str], args: argparse.Namespace, load: Load) -> None:
    """The rest of every run's steps from ``--clients`` clients, each its share of the runs."""
    errors: list[BaseException] = []

    def target(mine: list[str]) -> None:
        try:
            client = Client(url)
            rng = np.random.default_rng(int(mine[0], 16) % 2**32)
            for run_id in mine:
                for first in range(args.steps_per_batch, args.steps, args.steps_per_batch):
                    post_batch(client, run_id, first, args, rng, load)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    threads = [
        threading.Thread(target=target, args=(run_ids[c :: args.clients],))
        for c in range(args.clients)
    ]
    load.started = time.perf_counter()
    for thread in threads:
        thread.start()
    last_report = time.monotonic()
    while any(t.is_alive() for t in threads):
        for thread in threads:
            thread.join(timeout=5)
        if time.monotonic() - last_report > 60:
            last_report = time.monotonic()
            stored = sum(points for _, points, _ in load.done)
            print(f"  {stored:,} points stored after {time.perf_counter() - load.started:,.0f} s")
    if errors:
        raise errors[0]


def tenth_rates(load: Load) -> tuple[float, float, float, float]:
    """Points/s over the first and the last tenth of the points, and their batch p95 latency."""
    done = sorted(load.done)
    total = sum(points for _, points, _ in done)
    ends = np.cumsum([points for _, points, _ in done])
    first = [i for i, end in enumerate(ends) if end - done[i][1] < total / 10]
    last = [i for i, end in enumerate(ends) if end > total * 9 / 10 and i > 0]
    first_rate = sum(done[i][1] for i in first) / (done[first[-1]][0] - load.started)
    last_rate = sum(done[i][1] for i in last) / (done[-1][0] - done[last[0] - 1][0])
    return (
        first_rate,
        last_rate,
        p95([done[i][2] for i in first]),
        p95([done[i][2] for i in last]),
    )


def p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20)[-1] if len(samples) > 1 else samples[0]


def reads(url: str, probe: str, repeats: int) -> tuple[float, float]:
    """Median seconds of the probe's 1M-point series read downsampled, and of the run list."""
    client = Client(url)  # a fresh connection: the server closes idle keep-alive ones
    path = f"/api/v1/runs/{probe}/points?name={PROBE_SERIES}&points=1000"
    read_s, body = timed(lambda: client.request("GET", path), repeats)
    assert len(json.loads(body)["step"]) <= 1000
    list_s, _ = timed(lambda: client.request("GET", "/api/v1/runs?limit=50"), repeats)
    return read_s, list_s


def pg_sizes(url: str) -> dict[str, int]:
    """Bytes of the database and of each table with its indexes and TOAST, and of its indexes."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            sizes = {"database": conn.execute(text("SELECT pg_database_size(current_database())"))}
            sizes = {k: v.scalar_one() for k, v in sizes.items()}
            for table in ("chunks", "series", "batches", "runs"):
                total, indexes = conn.execute(
                    text("SELECT pg_total_relation_size(:t), pg_indexes_size(:t)"), {"t": table}
                ).one()
                sizes[table], sizes[f"{table} indexes"] = total, indexes
            # Packed columns past ~2 kB live in the TOAST table, read through its own index.
            toast, toast_index = conn.execute(
                text(
                    "SELECT pg_relation_size(reltoastrelid), pg_indexes_size(reltoastrelid) "
                    "FROM pg_class WHERE relname = 'chunks'"
                )
            ).one()
            sizes["chunks TOAST"], sizes["chunks TOAST index"] = toast, toast_index
            for (name,) in conn.execute(
                text("SELECT indexname FROM pg_indexes WHERE tablename = 'chunks'")
            ):
                sizes[name] = conn.execute(
                    text("SELECT pg_relation_size(CAST(:i AS regclass))"), {"i": name}
                ).scalar_one()
            return sizes
    finally:
        engine.dispose()


def sqlite_sizes(path: Path) -> dict[str, int]:
    files = [path, Path(f"{path}-wal")]
    return {"database": sum(f.stat().st_size for f in files if f.exists())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    store = parser.add_mutually_exclusive_group(required=True)
    store.add_argument("--pg", help="PostgreSQL URL of an empty database of the bench's own")
    store.add_argument("--sqlite", type=Path, help="SQLite file to create (must not exist)")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--series", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--steps-per-batch", type=int, default=500)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--probe-points", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--keep", action="store_true", help="keep the SQLite file")
    args = parser.parse_args()
    if args.sqlite and args.sqlite.exists():
        parser.error(f"{args.sqlite} exists: the bench needs a fresh file")
    url = args.pg or f"sqlite:///{args.sqlite}"
    name = "postgresql" if args.pg else "sqlite"

    print(
        f"machine: {platform.platform()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; store: {name}"
    )
    server = start_trickscope(url)
    try:
        probe = fill_long_series(Client(server.url), args.probe_points, 1000)
        seed, load = Load(), Load()
        run_ids = create_runs(server.url, args, seed)
        read_before, list_before = reads(server.url, probe, args.repeats)
        planned = args.runs * args.series * args.steps
        print(f"loading {planned:,} points ({args.runs} runs x {args.series} x {args.steps})")
        run_load(server.url, run_ids, args, load)
        elapsed = load.done[-1][0] - load.started
        read_after, list_after = reads(server.url, probe, args.repeats)
    finally:
        server.stop()
    stored = sum(points for _, points, _ in load.done)
    seeded = sum(points for _, points, _ in seed.done)
    held = stored + seeded + args.probe_points
    sizes = pg_sizes(args.pg) if args.pg else sqlite_sizes(args.sqlite)
    if args.sqlite and not args.keep:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{args.sqlite}{suffix}").unlink(missing_ok=True)
    first, last, first_p95, last_p95 = tenth_rates(load)

    print(f"\n| {name} | start: {seeded + args.probe_points:,} points | end: {held:,} points |")
    print("|---|---:|---:|")
    print(f"| ingest, points/s (first / last tenth) | {first:,.0f} | {last:,.0f} |")
    print(
        f"| batch latency p95 (first / last tenth) | {first_p95 * 1000:,.0f} ms "
        f"| {last_p95 * 1000:,.0f} ms |"
    )
    print(
        f"| {args.probe_points:,}-point series read → ≤1,000 points (median) "
        f"| {read_before * 1000:,.1f} ms | {read_after * 1000:,.1f} ms |"
    )
    print(
        f"| run list, 50 per page (median) | {list_before * 1000:,.1f} ms "
        f"| {list_after * 1000:,.1f} ms |"
    )
    print(
        f"\nload: {stored:,} points in {elapsed:,.1f} s ({stored / elapsed:,.0f} points/s "
        f"over the whole load, {args.clients} clients, "
        f"{args.series * args.steps_per_batch:,} points per batch)"
    )
    print("\n| on disk | bytes | bytes per point |")
    print("|---|---:|---:|")
    for what, size in sizes.items():
        print(f"| {what} | {size / 2**20:,.1f} MiB | {size / held:.2f} |")


if __name__ == "__main__":
    main()
