"""Live fan-out: ingest latency, delivery latency and server CPU with many SSE viewers on one run.

    python bench/live_fanout.py [--viewers 200] [--rate 10] [--seconds 20] [--rounds 3] [--pg URL]

A writer posts ``--rate`` batches per second to one run (each batch one step of ``--series``
scalars plus ``sent_at``, the wall time it was sent), with no viewers and with ``--viewers`` SSE
streams open on the run. The two conditions alternate over ``--rounds`` rounds of
``--seconds / --rounds`` each (a fresh run each time), and each condition's figures pool its
rounds: on a shared machine a burst of foreign load then lands in one short phase of one
condition instead of deciding a whole side of the ratio. The viewers run in a separate process
so their parsing does not share a core's GIL with the writer, and read their streams straight
off the socket (``--viewer-client httpx`` for the heavier client of earlier figures); each
computes its delivery delay from the ``sent_at`` values it receives. Server CPU is the server
process tree's CPU time over the measured phases. SQLite always; PostgreSQL with ``--pg`` (default
TRICKSCOPE_BENCH_PG_URL, then TRICKSCOPE_TEST_PG_URL).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import orjson
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peers import Client, Server, start_trickscope  # noqa: E402

from trickscope_wire import PointBatch, RunCreate, SeriesColumns, dumps, encode_f64, encode_i64


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) >= 2 else float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its children (uvicorn workers)."""
    root = psutil.Process(pid)
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def batch(step: int, series: int, stamped: bool = True) -> bytes:
    now = time.time()
    stamp = encode_f64([now])
    columns = [
        SeriesColumns(
            name=f"metric/{s}", steps=encode_i64([step]), values=encode_f64([0.5]), times=stamp
        )
        for s in range(series)
    ]
    if stamped:  # the history written before the viewers connect has no delivery to time
        columns.append(
            SeriesColumns(name="sent_at", steps=encode_i64([step]), values=stamp, times=stamp)
        )
    return dumps(PointBatch(batch_id=uuid.uuid4().hex, series=columns))


def write(
    url: str,
    run_id: str,
    *,
    rate: float,
    seconds: float,
    first_step: int,
    series: int,
    stamped: bool = True,
) -> tuple[list[float], int]:
    """Post batches at ``rate``/s for ``seconds``; the per-request latencies and batches sent."""
    client = Client(url)
    latencies: list[float] = []
    interval = 1.0 / rate
    start = time.perf_counter()
    step = first_step
    while time.perf_counter() - start < seconds:
        due = start + (step - first_step) * interval
        wait = due - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        body = batch(step, series, stamped)
        sent = time.perf_counter()
        client.request("POST", f"/api/v1/runs/{run_id}/points", body)
        latencies.append(time.perf_counter() - sent)
        step += 1
    return latencies, step


async def _viewer(
    client: httpx.AsyncClient, path: str, delays: list[float], steps: list[int], ready
) -> None:
    async with client.stream("GET", path) as response:
        ready()
        event = ""
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "points" and '"sent_at"' in line:
                now = time.time()
                column = orjson.loads(line[6:])["series"]["sent_at"]
                delays.extend(now - sent for sent in column["value"])
                steps.extend(column["step"])


async def _raw_viewer(url: str, path: str, delays: list[float], steps: list[int], ready) -> None:
    """The same stream read straight off the socket: HTTP/1.1 chunks split into SSE messages.

    On a 2-core machine the viewers share the cores with the server and the writer; httpx's
    line iterator costs ~100 us a message, which is 0.2 of a core for 200 viewers at 10
    batches/s, and that contention lands on the ingest latency being measured.
    """
    host, _, port = url.removeprefix("http://").partition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200") or b"transfer-encoding: chunked" not in head.lower():
        raise RuntimeError(f"unexpected answer: {head[:200]!r}")
    ready()
    pending = b""
    try:
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
            if size == 0:
                return
            pending += (await reader.readexactly(size + 2))[:-2]
            *messages, pending = pending.split(b"\n\n")
            for message in messages:
                if b"event: points\n" not in message or b'"sent_at"' not in message:
                    continue
                now = time.time()
                data = message[message.index(b"data: ") + 6 :]
                column = orjson.loads(data)["series"]["sent_at"]
                delays.extend(now - sent for sent in column["value"])
                steps.extend(column["step"])
    finally:
        writer.close()


def view(url: str, path: str, viewers: int, client_kind: str, connected, stop, results) -> None:
    """A process holding ``viewers`` streams until ``stop`` is set."""

    async def main() -> tuple[list[float], list[list[int]]]:
        delays: list[float] = []
        steps: list[list[int]] = [[] for _ in range(viewers)]
        opened = 0

        def ready() -> None:
            nonlocal opened
            opened += 1
            if opened == viewers:
                connected.set()

        limits = httpx.Limits(max_connections=viewers + 10)
        timeout = httpx.Timeout(60.0)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as client:
            tasks = [
                asyncio.create_task(
                    _raw_viewer(url, path, delays, steps[v], ready)
                    if client_kind == "raw"
                    else _viewer(client, path, delays, steps[v], ready)
                )
                for v in range(viewers)
            ]
            while not stop.is_set():
                await asyncio.sleep(0.1)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return delays, steps

    results.put(asyncio.run(main()))


def phase(server: Server, args: argparse.Namespace, viewers: int, seconds: float) -> dict:
    """One phase on a fresh run: raw latencies and delays, exact viewers, CPU seconds."""
    client = Client(server.url)
    run_id = uuid.uuid4().hex
    client.request("PUT", f"/api/v1/runs/{run_id}", dumps(RunCreate(project="bench", name="live")))
    # A little history, so a stream has something to resume through.
    latencies, step = write(
        server.url, run_id, rate=50, seconds=1, first_step=0, series=args.series, stamped=False
    )
    viewer_process = None
    results: multiprocessing.Queue = multiprocessing.Queue()
    if viewers:
        connected, stop = multiprocessing.Event(), multiprocessing.Event()
        viewer_process = multiprocessing.Process(
            target=view,
            args=(
                server.url,
                f"/api/v1/runs/{run_id}/events",
                viewers,
                args.viewer_client,
                connected,
                stop,
                results,
            ),
        )
        viewer_process.start()
        if not connected.wait(60):
            raise RuntimeError("viewers did not connect within 60 s")
        time.sleep(2)  # past the catch-up reads
    viewers_cpu_before = cpu_seconds(viewer_process.pid) if viewer_process else 0.0
    cpu_before, wall_before = cpu_seconds(server.process.pid), time.perf_counter()
    latencies, last = write(
        server.url,
        run_id,
        rate=args.rate,
        seconds=seconds,
        first_step=step,
        series=args.series,
    )
    elapsed = time.perf_counter() - wall_before
    cpu = cpu_seconds(server.process.pid) - cpu_before
    viewers_cpu = cpu_seconds(viewer_process.pid) - viewers_cpu_before if viewer_process else 0.0
    delays: list[float] = []
    exact = 0
    if viewer_process is not None:
        time.sleep(2)  # the last batches' delivery
        stop.set()
        delays, seen = results.get(timeout=seconds + 120)
        # Every viewer must have seen every stamped step exactly once, in order.
        exact = sum(steps == list(range(step, last)) for steps in seen)
        viewer_process.join(timeout=30)
    return {
        "latencies": latencies,
        "delays": delays,
        "exact": exact,
        "elapsed": elapsed,
        "cpu": cpu,
        "viewers_cpu": viewers_cpu,
    }


def pooled(phases: list[dict]) -> dict[str, float]:
    """A condition's figures over all its rounds: percentiles of the pooled samples, CPU and
    rates over the summed time, viewers exact in every round."""
    latencies = [x for p in phases for x in p["latencies"]]
    delays = [x for p in phases for x in p["delays"]]
    elapsed = sum(p["elapsed"] for p in phases)
    return {
        "ingest_p50": statistics.median(latencies) * 1000,
        "ingest_p95": p95(latencies) * 1000,
        "batches_per_s": len(latencies) / elapsed,
        "delivery_p95": p95(delays) if delays else float("nan"),
        "exact": min(p["exact"] for p in phases),
        "cpu": sum(p["cpu"] for p in phases) / elapsed,
        "viewers_cpu": sum(p["viewers_cpu"] for p in phases) / elapsed,
        "round_p95": [p95(p["latencies"]) * 1000 for p in phases],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--viewers", type=int, default=200)
    parser.add_argument("--rate", type=float, default=10.0, help="ingest batches per second")
    parser.add_argument(
        "--seconds",
        type=float,
        default=20.0,
        help="measured seconds of each condition (no viewers, viewers), split over the rounds",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="alternations of the two conditions (1: one phase each, as before 2026-12-06)",
    )
    parser.add_argument("--series", type=int, default=20, help="scalars per batch")
    parser.add_argument(
        "--viewer-client",
        choices=["raw", "httpx"],
        default="raw",
        help="how the viewers read their streams: off the socket (light) or with httpx (the "
        "client of the figures before 2026-12-06, ~4x the viewers' CPU)",
    )
    parser.add_argument(
        "--pg",
        default=os.environ.get("TRICKSCOPE_BENCH_PG_URL")
        or os.environ.get("TRICKSCOPE_TEST_PG_URL"),
        help="PostgreSQL URL (default: TRICKSCOPE_BENCH_PG_URL, then TRICKSCOPE_TEST_PG_URL)",
    )
    parser.add_argument("--store", choices=["both", "sqlite", "postgresql"], default="both")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    machine = f"{platform.platform()}, {os.cpu_count()} cores"
    print(
        f"machine: {machine}, Python {platform.python_version()}, viewers: {args.viewer_client}, "
        f"{args.rounds} rounds of {args.seconds / args.rounds:g} s per condition"
    )
    rows = []
    seconds = args.seconds / args.rounds
    with tempfile.TemporaryDirectory() as scratch:
        stores = [("sqlite", f"sqlite:///{scratch}/live.db")]
        if args.pg:
            stores.append(("postgresql", args.pg))
        stores = [s for s in stores if args.store in ("both", s[0])]
        for store, url in stores:
            server = start_trickscope(url)
            try:
                conditions = (0, args.viewers)
                phases: list[list[dict]] = [[], []]
                for _ in range(args.rounds):
                    for viewers, done in zip(conditions, phases, strict=True):
                        done.append(phase(server, args, viewers, seconds))
                rows += [(store, v, pooled(p)) for v, p in zip(conditions, phases, strict=True)]
            finally:
                server.stop()
    print(
        "\n| store | viewers | ingest p50 ms | ingest p95 ms | p95 vs no viewers | batches/s "
        "| delivery p95 s | viewers with every point once | server CPU (cores) "
        "| viewers' CPU (cores) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    baseline: dict[str, float] = {}
    for store, viewers, r in rows:
        baseline.setdefault(store, r["ingest_p95"])
        ratio = r["ingest_p95"] / baseline[store]
        delivery = "–" if viewers == 0 else f"{r['delivery_p95']:.3f}"
        seen = "–" if viewers == 0 else f"{r['exact']}/{viewers}"
        print(
            f"| {store} | {viewers} | {r['ingest_p50']:.1f} | {r['ingest_p95']:.1f} | {ratio:.2f}x "
            f"| {r['batches_per_s']:.1f} | {delivery} | {seen} | {r['cpu']:.2f} "
            f"| {r['viewers_cpu']:.2f} |"
        )
    # Each round's own p95, so a reader sees how much one phase alone would have varied.
    for store, viewers, r in rows:
        rounds = ", ".join(f"{x:.1f}" for x in r["round_p95"])
        print(f"{store}, {viewers} viewers: ingest p95 ms per round: {rounds}")


if __name__ == "__main__":
    main()
