"""Server CPU per due step of per-layer statistics, and the reads that show them.

    python bench/stats_ingest.py [--backends sqlite postgresql] [--forms series blocks]
                                 [--layers 75] [--steps 300]

A real server (``trickscope serve``) in its own process and a real agent in this one: an MLP of
``--layers`` linear layers (two tensors each: 150 tensors, 1,650 per-layer series at the default
75) trained for ``--steps`` steps with ``watch(model, optimizer, every=1, hist_every=0)``, every
statistic at every step. The server first gets one short unmeasured run (first-request costs:
imports, statement caches), then its idle CPU rate is measured. Reported: the server's CPU time
(its POSIX CPU clock, every thread) from ``init`` to ``finish`` returning and the server going
quiet, less its idle CPU over the same wall time, per step; the same without the run's own
requests (create, layers, setup, finish: once per run whatever its length, so 300 steps
overstate them); then the latency of the two reads a user makes of them: the heatmap of one
statistic over every layer, and one layer's chart (median of ``--reads``).

A second table takes the network, the agent's cadence and the training out: the server's ingest
path alone (``parse_batch`` then ``ingest_batch``, in this process) over batches of the same
1,650 series shaped as the agent sends them (one shared steps and times column, ``--batch-steps``
steps each, what a 0.5 s flush holds at 20 steps/s), CPU time per step, median of 3 rounds; and
the compaction those batches cause once per ``COMPACT_AFTER_CHUNKS`` batches (after the answer,
so outside the first table's 300 steps), CPU time per step it covers.

Each is measured for both wire forms (``--forms``): ``series``, one column per series as older
agents send them, stored as one chunk row and one summary update per series (the layout before
blocks); ``blocks``, one column per statistic (a layers x steps block), stored as one row per
statistic and batch with the family's summaries merged in one row.

PostgreSQL needs ``--pg-url`` (default: the test database of the CI setup).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

PG_URL = "postgresql+psycopg://trickscope:trickscope@127.0.0.1:5432/trickscope_test"
WARM_UP_STEPS = 20

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peers import start_trickscope  # noqa: E402
from _server_cpu import (  # noqa: E402
    RequestCounter,
    idle_rate,
    process_cpu_seconds,
    run_requests_cpu,
    wait_quiet,
)


def train(url: str, *, layers: int, steps: int, width: int, form: str) -> str:
    """Train the MLP with every statistic at every step until the server acknowledged every
    batch; the run's id. ``form`` "series": the agent sends each series on its own, as agents
    before blocks did."""
    import torch

    import trickscope
    import trickscope.batches

    trickscope.batches.as_blocks = _BLOCKS if form == "blocks" else _series_form

    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(layers)])
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    data = torch.randn(32, width)
    run = trickscope.init(project="bench", name=f"stats-{layers}x2", url=url)
    run.watch(model, optimizer, every=1, hist_every=0)
    for step in range(steps):
        optimizer.zero_grad()
        loss = model(data).pow(2).mean()
        loss.backward()
        optimizer.step()
        run.log({"loss": loss.detach()}, step=step)
    run.finish()  # flushes: returns once the server acknowledged every batch
    return run.id


def get(url: str) -> float:
    """Seconds to read ``url`` whole."""
    began = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as response:
        response.read()
    return time.perf_counter() - began


def read_json(url: str) -> dict:
    """The JSON document at ``url``."""
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.loads(response.read())


def _series_form(batch: object) -> object:
    return batch


_BLOCKS = None  # the agent's own as_blocks, set by main()


def measure(db_url: str, args: argparse.Namespace, form: str) -> dict[str, float]:
    """One backend: server CPU per step (the whole run, and without the run's own requests)
    and read latencies."""
    server = start_trickscope(db_url)
    process, url = server.process, server.url
    try:
        # Unmeasured: the server's first requests import and cache what later ones reuse.
        train(url, layers=args.layers, steps=WARM_UP_STEPS, width=args.width, form=form)
        time.sleep(1.0)  # past the warm-up run's compaction
        idle = idle_rate(process.pid, args.idle)
        with RequestCounter() as counter:
            counter.reset(url, process.pid, idle)
            began, cpu = time.monotonic(), process_cpu_seconds(process.pid)
            run_id = train(url, layers=args.layers, steps=args.steps, width=args.width, form=form)
            wait_quiet(process.pid, idle)
            wall = time.monotonic() - began
            busy = process_cpu_seconds(process.pid) - cpu - idle * wall
            own = run_requests_cpu(counter.by_kind)
        base = f"{url}/api/v1/runs/{urllib.parse.quote(run_id)}"
        names = [s["name"] for s in read_json(f"{base}/series")["series"]]
        per_layer = [n for n in names if "/" in n and not n.startswith(("rank/", "global/"))]
        heatmap = f"{base}/heatmap?stat=grad_norm"
        shown = len(read_json(heatmap)["layers"])
        if shown != args.layers * 2:
            raise RuntimeError(f"the heatmap shows {shown} tensors, not {args.layers * 2}")
        layer = urllib.parse.quote(sorted(n for n in names if n.startswith("grad_norm/"))[0])
        chart = f"{base}/points?name={layer}"
        for target in (heatmap, chart):
            get(target)  # warm
        heat = statistics.median(get(heatmap) for _ in range(args.reads))
        one = statistics.median(get(chart) for _ in range(args.reads))
        return {
            "series": len(names),
            "per_layer_series": len(per_layer),
            "cpu_ms_per_step": 1000 * busy / args.steps,
            "steady_ms_per_step": 1000 * (busy - own) / args.steps,
            "idle_ms_per_s": 1000 * idle,
            "wall_s": wall,
            "heatmap_ms": 1000 * heat,
            "chart_ms": 1000 * one,
        }
    finally:
        server.stop()


STATS = (
    "grad_norm",
    "grad_mean",
    "grad_std",
    "grad_max_abs",
    "grad_zero_frac",
    "weight_norm",
    "weight_mean",
    "weight_std",
    "weight_max_abs",
    "update_ratio",
    "update_norm",
)


def service_cpu(
    db_url: str, *, layers: int, batch_steps: int, form: str, batches: int = 30
) -> float:
    """CPU milliseconds per step of the ingest path alone, median of 3 rounds of ``batches``."""
    from trickscope_server.services.ingest import ingest_batch, parse_batch

    db, run_id, bodies = _run_with_bodies(
        db_url, "service", layers=layers, batch_steps=batch_steps, form=form, count=5 + 3 * batches
    )

    def ingest(part: list[bytes]) -> float:
        began = time.process_time()
        for body in part:
            ingest_batch(db, run_id=run_id, batch=parse_batch(body, max_points=10**8))
        return time.process_time() - began

    ingest(bodies[:5])  # warm: series created, ids cached
    rounds = [ingest(bodies[5 + r * batches : 5 + (r + 1) * batches]) for r in range(3)]
    db.dispose()
    return 1000 * statistics.median(rounds) / (batches * batch_steps)


def compaction_cpu(db_url: str, *, layers: int, batch_steps: int, form: str) -> float:
    """CPU milliseconds per step of compacting what ``COMPACT_AFTER_CHUNKS`` batches stored
    (the ingest path triggers it once per that many batches, after acknowledging)."""
    from trickscope_server.services import compact
    from trickscope_server.services.ingest import COMPACT_AFTER_CHUNKS, ingest_batch, parse_batch

    db, run_id, bodies = _run_with_bodies(
        db_url,
        "compaction",
        layers=layers,
        batch_steps=batch_steps,
        form=form,
        count=COMPACT_AFTER_CHUNKS,
    )
    due: list[int] = []
    for body in bodies:
        outcome = ingest_batch(db, run_id=run_id, batch=parse_batch(body, max_points=10**8))
        due = outcome.compact or due
    began = time.process_time()
    compact.compact_series(db, series_ids=due)
    spent = time.process_time() - began
    db.dispose()
    return 1000 * spent / (COMPACT_AFTER_CHUNKS * batch_steps)


def _run_with_bodies(
    db_url: str, name: str, *, layers: int, batch_steps: int, form: str, count: int
) -> tuple[Any, str, list[bytes]]:
    """A fresh run with ``layers`` declared as watch does, and ``count`` encoded batches of
    every statistic of every tensor over ``batch_steps`` steps each, in wire form ``form``."""
    import numpy as np

    from trickscope.batches import as_blocks
    from trickscope_server.services.runs import declare_layers, upsert_run
    from trickscope_server.storage import Database
    from trickscope_wire import (
        LayersDeclare,
        PointBatch,
        RunCreate,
        SeriesColumns,
        dumps,
        encode_f64,
        encode_i64,
    )

    db = Database(db_url)
    db.upgrade()
    run_id = f"{name}-{time.time_ns()}"
    upsert_run(db, run_id=run_id, payload=RunCreate(project="bench", name=name))
    tensors = [f"{i}.{k}" for i in range(layers) for k in ("weight", "bias")]
    declare_layers(db, run_id=run_id, payload=LayersDeclare(layers=tensors))
    names = [f"{stat}/{tensor}" for stat in STATS for tensor in tensors]
    rng = np.random.default_rng(0)
    bodies = []
    for b in range(count):
        steps = np.arange(b * batch_steps, (b + 1) * batch_steps, dtype="<i8")
        shared_steps = encode_i64(steps.tolist())
        shared_times = encode_f64((1.7e9 + steps * 0.05).tolist())
        series = [
            SeriesColumns(
                name=series_name,
                steps=shared_steps,
                values=encode_f64(rng.random(batch_steps).tolist()),
                times=shared_times,
            )
            for series_name in names
        ]
        batch = PointBatch(batch_id=f"b{b}", series=series)
        bodies.append(dumps(as_blocks(batch) if form == "blocks" else batch))
    return db, run_id, bodies


def main() -> None:
    global _BLOCKS
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"])
    parser.add_argument("--forms", nargs="+", default=["series", "blocks"])
    parser.add_argument("--pg-url", default=os.environ.get("TRICKSCOPE_TEST_PG_URL", PG_URL))
    parser.add_argument("--layers", type=int, default=75, help="linear layers (2 tensors each)")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--idle", type=float, default=3.0, help="seconds of idle CPU measured")
    parser.add_argument("--reads", type=int, default=7)
    parser.add_argument("--batch-steps", type=int, default=10, help="steps per batch (service)")
    parser.add_argument("--json", action="store_true", help="one JSON line per backend")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import trickscope.batches

    _BLOCKS = trickscope.batches.as_blocks
    series = args.layers * 2 * 11
    print(
        f"{platform.machine()}, {os.cpu_count()} cores; MLP {args.layers} layers "
        f"({args.layers * 2} tensors, ~{series} per-layer series), {args.steps} steps, every=1"
    )
    print(
        "| backend | wire form | series | server CPU per due step (ms) "
        "| without the run's start and finish (ms) | heatmap (ms) | one layer's chart (ms) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as scratch:
        for backend in args.backends:
            for form in args.forms:
                db = f"sqlite:///{scratch}/bench-{form}.db" if backend == "sqlite" else args.pg_url
                result = measure(db, args, form)
                if args.json:
                    print(json.dumps({"backend": backend, "form": form, **result}))
                print(
                    f"| {backend} | {form} | {result['series']} "
                    f"| {result['cpu_ms_per_step']:.2f} | {result['steady_ms_per_step']:.2f} "
                    f"| {result['heatmap_ms']:.1f} "
                    f"| {result['chart_ms']:.1f} |",
                    flush=True,
                )
        print(
            f"\nIngest path alone: {args.layers * 2 * len(STATS)} series, "
            f"{args.batch_steps} steps a batch"
        )
        print("| backend | wire form | ingest CPU per step (ms) | compaction CPU per step (ms) |")
        print("|---|---|---:|---:|")
        for backend in args.backends:
            for form in args.forms:
                db = (
                    f"sqlite:///{scratch}/service-{form}.db" if backend == "sqlite" else args.pg_url
                )
                cpu = service_cpu(db, layers=args.layers, batch_steps=args.batch_steps, form=form)
                db = (
                    f"sqlite:///{scratch}/compaction-{form}.db"
                    if backend == "sqlite"
                    else args.pg_url
                )
                packed = compaction_cpu(
                    db, layers=args.layers, batch_steps=args.batch_steps, form=form
                )
                print(f"| {backend} | {form} | {cpu:.2f} | {packed:.2f} |", flush=True)


if __name__ == "__main__":
    main()
