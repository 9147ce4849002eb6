"""Ingest throughput: trickscope's HTTP ingest against an MLflow tracking server's log_batch.

    python bench/ingest.py [--pg postgresql+psycopg://...] [--mlflow-pg postgresql://...]
    python bench/ingest.py --workers-only --pg postgresql+psycopg://...   # 1, 2, 4 workers
    python bench/ingest.py --agent [--keys 2000 --steps 500 --values float|tensor]   # run.log

Both servers run on loopback, started by this script, and receive the same kind of points: many
series (per-layer statistics) over consecutive steps. trickscope gets its packed columnar batches,
MLflow its REST ``runs/log-batch`` with 1,000 metrics per call (its limit). Points/s with 1 and 4
concurrent clients, each client one run, median of ``--repeats`` repetitions.
"""

from __future__ import annotations

import argparse
import gzip
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _agent_ingest import bench_agent, print_agent_table  # noqa: E402
from _peers import Client, Server, mlflow_executable, start_mlflow, start_trickscope  # noqa: E402

from trickscope_wire import PointBatch, RunCreate, SeriesColumns, dumps, encode_f64, encode_i64


def trickscope_bodies(series: int, steps_per_batch: int, batches: int) -> list[bytes]:
    """Pre-encoded request bodies, so the clock measures the server, not the encoder."""
    import random

    rng = random.Random(0)
    bodies = []
    for b in range(batches):
        steps = list(range(b * steps_per_batch, (b + 1) * steps_per_batch))
        times = [time.time()] * steps_per_batch
        columns = [
            SeriesColumns(
                name=f"grad_norm/layer{s}.weight",
                steps=encode_i64(steps),
                values=encode_f64(rng.random() for _ in steps),
                times=encode_f64(times),
            )
            for s in range(series)
        ]
        bodies.append(dumps(PointBatch(batch_id=uuid.uuid4().hex, series=columns)))
    return bodies


def push_trickscope(url: str, bodies: list[bytes], gzipped: bool) -> None:
    client = Client(url)
    run_id = uuid.uuid4().hex
    client.request(
        "PUT", f"/api/v1/runs/{run_id}", dumps(RunCreate(project="bench", name="ingest"))
    )
    headers = {"Content-Encoding": "gzip"} if gzipped else {}
    for body in bodies:
        client.request(
            "POST",
            f"/api/v1/runs/{run_id}/points",
            gzip.compress(body, 1) if gzipped else body,
            headers,
        )


def push_mlflow(url: str, series: int, steps: int) -> None:
    client = Client(url)
    run = client.json("POST", "/api/2.0/mlflow/runs/create", {"experiment_id": "0"})
    run_id = run["run"]["info"]["run_id"]
    now = int(time.time() * 1000)
    metrics = [
        {"key": f"grad_norm/layer{s}.weight", "value": 0.5, "timestamp": now, "step": step}
        for step in range(steps)
        for s in range(series)
    ]
    for start in range(0, len(metrics), 1000):
        client.json(
            "POST",
            "/api/2.0/mlflow/runs/log-batch",
            {"run_id": run_id, "metrics": metrics[start : start + 1000]},
        )


def measure(clients: int, push, *args) -> float:
    """Wall seconds for ``clients`` threads each running ``push(*args)``."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            push(*args)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=target) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - start


def bench_trickscope(server: Server, args: argparse.Namespace, store: str) -> list[tuple]:
    rows = []
    per_client = args.series * args.steps_per_batch * args.batches
    for clients in (1, 4):
        for gzipped in (False, True):
            bodies = trickscope_bodies(args.series, args.steps_per_batch, args.batches)
            rates = [
                clients
                * per_client
                / measure(clients, push_trickscope, server.url, bodies, gzipped)
                for _ in range(args.repeats)
            ]
            label = "trickscope (gzip)" if gzipped else "trickscope"
            rows.append((label, store, clients, clients * per_client, statistics.median(rates)))
    return rows


def bench_workers(database_url: str, args: argparse.Namespace) -> list[tuple[int, int, float]]:
    """Points/s of ``--worker-clients`` concurrent clients against 1, 2 and 4 workers."""
    rows = []
    clients = args.worker_clients
    per_client = args.series * args.steps_per_batch * args.batches
    for workers in (1, 2, 4):
        server = start_trickscope(database_url, "--workers", str(workers))
        try:
            bodies = trickscope_bodies(args.series, args.steps_per_batch, args.batches)
            rates = [
                clients * per_client / measure(clients, push_trickscope, server.url, bodies, False)
                for _ in range(args.repeats)
            ]
            rows.append((workers, clients, statistics.median(rates)))
        finally:
            server.stop()
    return rows


def bench_mlflow(server: Server, args: argparse.Namespace, store: str) -> list[tuple]:
    rows = []
    points = args.mlflow_series * args.mlflow_steps
    for clients in (1, 4):
        rates = [
            clients
            * points
            / measure(clients, push_mlflow, server.url, args.mlflow_series, args.mlflow_steps)
            for _ in range(args.repeats)
        ]
        rows.append(
            ("mlflow log_batch", store, clients, clients * points, statistics.median(rates))
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=1000)
    parser.add_argument("--steps-per-batch", type=int, default=100)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--mlflow-series", type=int, default=100)
    parser.add_argument("--mlflow-steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--pg",
        default=os.environ.get("TRICKSCOPE_TEST_PG_URL"),
        help="PostgreSQL URL for trickscope (default: TRICKSCOPE_TEST_PG_URL)",
    )
    parser.add_argument("--mlflow-pg", help="PostgreSQL URL for MLflow's store (its own database)")
    parser.add_argument(
        "--worker-clients", type=int, default=8, help="concurrent clients in the workers table"
    )
    parser.add_argument(
        "--workers-only",
        action="store_true",
        help="only the table of 1, 2 and 4 server workers on PostgreSQL (needs --pg)",
    )
    parser.add_argument(
        "--agent",
        action="store_true",
        help="only run.log end to end: a dict of --keys floats per step for --steps steps",
    )
    parser.add_argument("--keys", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--values", choices=("float", "tensor"), default="float")
    args = parser.parse_args()
    if args.agent:
        rounds = bench_agent(args.keys, args.steps, args.repeats, args.values)
        print_agent_table(args.keys, args.steps, rounds, args.values)
        return
    if args.workers_only:
        if not args.pg:
            parser.error("--workers-only needs --pg (or TRICKSCOPE_TEST_PG_URL)")
        print_workers_table(bench_workers(args.pg, args))
        return

    print(
        f"machine: {platform.platform()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}"
    )
    rows: list[tuple] = []
    with tempfile.TemporaryDirectory() as scratch:
        stores = [("sqlite", f"sqlite:///{scratch}/trickscope.db")]
        if args.pg:
            stores.append(("postgresql", args.pg))
        for store, url in stores:
            server = start_trickscope(url)
            try:
                rows += bench_trickscope(server, args, store)
            finally:
                server.stop()
        if mlflow_executable():
            mlflow_stores = [("sqlite", f"sqlite:///{scratch}/mlflow.db")]
            if args.mlflow_pg:
                mlflow_stores.append(("postgresql", args.mlflow_pg))
            for store, url in mlflow_stores:
                try:
                    server = start_mlflow(url, Path(scratch) / "artifacts")
                except RuntimeError as exc:  # one peer failing must not lose the other rows
                    print(f"MLflow on {store} did not start ({exc}): its rows are missing")
                    continue
                try:
                    rows += bench_mlflow(server, args, store)
                finally:
                    server.stop()
        else:
            print("MLflow not found (set MLFLOW_BIN): its rows are missing")

    print("\n| server | store | clients | points | points/s (median) |")
    print("|---|---|---:|---:|---:|")
    for name, store, clients, points, rate in rows:
        print(f"| {name} | {store} | {clients} | {points:,} | {rate:,.0f} |")
    if args.pg:
        print_workers_table(bench_workers(args.pg, args))
    for store in ("sqlite", "postgresql"):
        for clients in (1, 4):
            ours = [
                r[4] for r in rows if r[0] == "trickscope" and r[1] == store and r[2] == clients
            ]
            theirs = [
                r[4]
                for r in rows
                if r[0] == "mlflow log_batch" and r[1] == store and r[2] == clients
            ]
            if ours and theirs:
                print(
                    f"\n{store}, {clients} client(s): trickscope / MLflow = "
                    f"{ours[0] / theirs[0]:,.0f}x"
                )


def print_workers_table(rows: list[tuple[int, int, float]]) -> None:
    print(
        f"\ntrickscope serve --workers N on PostgreSQL ({os.cpu_count()} cores; the database, "
        "the clients and the workers share them)"
    )
    print("| workers | clients | points/s (median) |")
    print("|---:|---:|---:|")
    for workers, clients, rate in rows:
        print(f"| {workers} | {clients} | {rate:,.0f} |")


if __name__ == "__main__":
    main()
