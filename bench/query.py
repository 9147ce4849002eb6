"""Read latency: a downsampled 1M-point series, a 2,000-layer heatmap and the runs list from
trickscope, against MLflow's ``get_metric_history`` of a 100k-point metric, both servers on
loopback.

    python bench/query.py [--pg postgresql+psycopg://...] [--mlflow-pg postgresql://...]
    python bench/query.py --only runs-list [--pg ...]   # the runs list alone
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
import urllib.parse
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peers import Client, mlflow_executable, start_mlflow, start_trickscope  # noqa: E402

from trickscope_wire import (
    BLOCKS_WIRE_VERSION,
    LayersDeclare,
    PointBatch,
    RunCreate,
    SeriesColumns,
    StatBlock,
    dumps,
    encode_f64,
    encode_i64,
)


def fill_long_series(client: Client, points: int, chunk: int) -> str:
    """One run with one ``points``-long series arriving ``chunk`` points per batch, one spike."""
    import random

    rng = random.Random(0)
    run_id = uuid.uuid4().hex
    client.request("PUT", f"/api/v1/runs/{run_id}", dumps(RunCreate(project="bench", name="long")))
    spike = points // 3
    for start in range(0, points, chunk):
        steps = range(start, min(points, start + chunk))
        values = [1e3 if s == spike else rng.random() for s in steps]
        batch = PointBatch(
            batch_id=uuid.uuid4().hex,
            series=[
                SeriesColumns(
                    "loss/train",
                    encode_i64(steps),
                    encode_f64(values),
                    encode_f64([0.0] * len(values)),
                )
            ],
        )
        client.request("POST", f"/api/v1/runs/{run_id}/points", dumps(batch))
    return run_id


def fill_heatmap(client: Client, layers: int, steps: int, chunk: int) -> str:
    run_id = uuid.uuid4().hex
    client.request("PUT", f"/api/v1/runs/{run_id}", dumps(RunCreate(project="bench", name="wide")))
    names = [f"blocks.{i}.weight" for i in range(layers)]
    client.request("PUT", f"/api/v1/runs/{run_id}/layers", dumps(LayersDeclare(layers=names)))
    for start in range(0, steps, chunk):
        step_range = range(start, min(steps, start + chunk))
        steps_col = encode_i64(step_range)
        times = encode_f64([0.0] * len(step_range))
        series = [
            SeriesColumns(
                f"grad_norm/{name}",
                steps_col,
                encode_f64([(i + 1) * 1e-3] * len(step_range)),
                times,
            )
            for i, name in enumerate(names)
        ]
        batch = PointBatch(batch_id=uuid.uuid4().hex, series=series)
        client.request("POST", f"/api/v1/runs/{run_id}/points", dumps(batch))
    return run_id


RUNS_LIST_STATS = ("grad_norm", "update_ratio")


def fill_runs_table(client: Client, runs: int, layers: int, steps: int) -> tuple[str, str]:
    """``runs`` runs of one project, each with ``layers`` x 2 per-layer statistics sent as blocks
    (as ``watch`` sends them) and two run-level series; returns the project and a layer's name."""
    project = f"runs-list-{uuid.uuid4().hex[:8]}"
    names = [f"blocks.{i}.weight" for i in range(layers)]
    step_col = encode_i64(range(steps))
    times = encode_f64([0.0] * steps)
    for r in range(runs):
        run_id = uuid.uuid4().hex
        create = RunCreate(project=project, name=f"run{r}", config={"lr": 10.0**-r})
        client.request("PUT", f"/api/v1/runs/{run_id}", dumps(create))
        client.request("PUT", f"/api/v1/runs/{run_id}/layers", dumps(LayersDeclare(layers=names)))
        blocks = [
            StatBlock(
                family=stat,
                layers=names,
                steps=step_col,
                times=times,
                values=[encode_f64([(r + 1) * (i + 1) * 1e-3] * steps) for i in range(layers)],
            )
            for stat in RUNS_LIST_STATS
        ]
        series = [
            SeriesColumns(name, step_col, encode_f64([1.0 / (r + 1)] * steps), times)
            for name in ("loss/train", "lr/group0")
        ]
        batch = PointBatch(
            batch_id=uuid.uuid4().hex,
            series=series,
            blocks=blocks,
            wire_version=BLOCKS_WIRE_VERSION,
        )
        client.request("POST", f"/api/v1/runs/{run_id}/points", dumps(batch))
    return project, names[layers // 2]


def bench_runs_list(url: str, args: argparse.Namespace, store: str) -> list[tuple]:
    """The runs table's reads: a page, a page sorted by a per-layer statistic, one filtered."""
    import json

    server = start_trickscope(url)
    try:
        client = Client(server.url)
        series = args.list_layers * len(RUNS_LIST_STATS) + 2
        project, layer = fill_runs_table(client, args.list_runs, args.list_layers, args.list_steps)
        stat = urllib.parse.quote(f"{RUNS_LIST_STATS[0]}/{layer}", safe="")
        reads = [
            ("listed", f"/api/v1/runs?project={project}"),
            (
                "sorted by a per-layer statistic",
                f"/api/v1/runs?project={project}&sort=-metric:{stat}",
            ),
            (
                "filtered by a per-layer statistic",
                f"/api/v1/runs?project={project}&metric={stat}%3E0",
            ),
        ]
        listed = json.loads(client.request("GET", reads[0][1]))["runs"]
        names = "&".join(f"name={n}" for n in ("loss/train", "train/loss", "loss", "train_loss"))
        runs = ",".join(run["id"] for run in listed)
        reads.append(("their sparklines", f"/api/v1/sparklines?runs={runs}&{names}&points=48"))
        rows = []
        for what, path in reads:
            seconds, body = timed(lambda path=path: client.request("GET", path), args.repeats)
            shown = len(json.loads(body)["runs"])
            rows.append(
                (
                    "trickscope",
                    store,
                    f"runs list, {args.list_runs} runs × {series:,} series, {what} → {shown} runs",
                    seconds,
                )
            )
        return rows
    finally:
        server.stop()


def timed(fn, repeats: int) -> tuple[float, object]:
    samples, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples), result


def bench_trickscope(url: str, args: argparse.Namespace, store: str) -> list[tuple]:
    import json

    server = start_trickscope(url)
    try:
        client = Client(server.url)
        long_run = fill_long_series(client, args.points, args.chunk)
        wide_run = fill_heatmap(client, args.layers, args.heatmap_steps, args.chunk)
        path = f"/api/v1/runs/{long_run}/points?name=loss/train&points=1000"
        seconds, body = timed(lambda: client.request("GET", path), args.repeats)
        answer = json.loads(body)
        spike_kept = (args.points // 3) in answer["step"]
        heat_path = f"/api/v1/runs/{wide_run}/heatmap?stat=grad_norm&points=1000"
        heat_seconds, heat_body = timed(lambda: client.request("GET", heat_path), args.repeats)
        heat = json.loads(heat_body)
        return [
            (
                "trickscope",
                store,
                f"{args.points:,}-point series → {len(answer['step'])} points"
                f" (spike kept: {spike_kept})",
                seconds,
            ),
            (
                "trickscope",
                store,
                f"heatmap {len(heat['layers'])} layers × "
                f"{args.heatmap_steps} steps → {len(heat['step'])} columns",
                heat_seconds,
            ),
        ]
    finally:
        server.stop()


def bench_mlflow(backend: str, artifacts: Path, args: argparse.Namespace, store: str) -> tuple:
    server = start_mlflow(backend, artifacts)
    try:
        client = Client(server.url)
        run_id = client.json("POST", "/api/2.0/mlflow/runs/create", {"experiment_id": "0"})["run"][
            "info"
        ]["run_id"]
        metrics = [
            {"key": "loss", "value": 0.5, "timestamp": 0, "step": s}
            for s in range(args.mlflow_points)
        ]
        for start in range(0, len(metrics), 1000):
            client.json(
                "POST",
                "/api/2.0/mlflow/runs/log-batch",
                {"run_id": run_id, "metrics": metrics[start : start + 1000]},
            )

        def history() -> int:
            import json

            count, token = 0, None
            while True:
                query = {"run_id": run_id, "metric_key": "loss", "max_results": 25000}
                if token:
                    query["page_token"] = token
                page = json.loads(
                    client.request(
                        "GET",
                        "/api/2.0/mlflow/metrics/get-history?" + urllib.parse.urlencode(query),
                    )
                )
                count += len(page.get("metrics", []))
                token = page.get("next_page_token")
                if not token:
                    return count

        seconds, count = timed(history, max(1, args.repeats // 5))
        return ("mlflow", store, f"get_metric_history, {count:,} points (no downsampling)", seconds)
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=1000, help="points per ingested batch")
    parser.add_argument("--layers", type=int, default=2000)
    parser.add_argument("--heatmap-steps", type=int, default=1000)
    parser.add_argument("--mlflow-points", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--pg", default=os.environ.get("TRICKSCOPE_TEST_PG_URL"))
    parser.add_argument("--mlflow-pg")
    parser.add_argument("--list-runs", type=int, default=10, help="runs in the runs-list read")
    parser.add_argument("--list-layers", type=int, default=500, help="layers per run (2 stats)")
    parser.add_argument("--list-steps", type=int, default=20)
    parser.add_argument("--only", choices=["runs-list"], help="run one read alone")
    args = parser.parse_args()
    print(
        f"machine: {platform.platform()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}"
    )
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        stores = [("sqlite", f"sqlite:///{scratch}/trickscope.db")]
        if args.pg:
            stores.append(("postgresql", args.pg))
        for store, url in stores:
            if args.only is None:
                rows += bench_trickscope(url, args, store)
            rows += bench_runs_list(url, args, store)
        if args.only is None and mlflow_executable():
            backends = [("sqlite", f"sqlite:///{scratch}/mlflow.db")]
            if args.mlflow_pg:
                backends.append(("postgresql", args.mlflow_pg))
            for store, backend in backends:
                try:
                    rows.append(bench_mlflow(backend, Path(scratch) / "artifacts", args, store))
                except RuntimeError as exc:  # one peer failing must not lose the other rows
                    print(f"MLflow on {store} failed ({exc}): its row is missing")
    print("\n| server | store | read | median latency |")
    print("|---|---|---|---:|")
    for name, store, what, seconds in rows:
        print(f"| {name} | {store} | {what} | {1000 * seconds:,.1f} ms |")


if __name__ == "__main__":
    main()
