"""Server CPU of one ingest request back to back and after idle gaps, in process.

    python bench/request_warmth.py [--gaps 0 0.05 0.3] [--requests 60] [--db URL]

The agent flushes every 0.5 s, so the server meets each request after an idle gap; a machine
whose caches and clocks cool down meanwhile pays for it on every request. This bench sends the
same request (a real agent's logged-scalars batch for ViT-tiny, captured as in
``bench/ingest_requests.py``, its steps moved past the stored ones each time) straight into the
app's ASGI callable on this process's event loop, with no HTTP server and no network, and reads
this process's CPU time (every thread: the request's database work runs in the app's thread
pool) per request for each gap. The difference between the rows is the machine, not the code.

A second table measures the machine alone the same way: a fixed pure-Python workload (a JSON
round trip), run inline on the event loop and through a worker thread, after each gap; the
thread column less the inline one is what one hop to a thread costs here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from ingest_requests import Request, _moved, capture  # noqa: E402


async def _call(app: Any, method: str, path: str, body: bytes) -> None:
    """One request through the ASGI callable; raises unless it succeeded."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    headers = [
        (b"host", b"127.0.0.1:8000"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    await app(scope, receive, send)
    status = sent[0]["status"]
    if status >= 300:
        raise RuntimeError(f"{method} {path}: {status} {sent[1:2]!r}")


async def measure(db_url: str, requests: list[Request], gaps: list[float], n: int) -> list[float]:
    """CPU milliseconds per scalars request after each gap (seconds), on a fresh database."""
    from trickscope_server.app import create_app
    from trickscope_server.config import Settings

    app = create_app(Settings(database_url=db_url))
    run_id = uuid.uuid4().hex
    async with app.router.lifespan_context(app):
        for method, path, body in requests:
            if not path.endswith("/finish"):
                own = "/".join(run_id if len(part) == 32 else part for part in path.split("/"))
                await _call(app, method, own, body)
        scalars = [
            body
            for _, path, body in requests
            if path.endswith("/points")
            and not (decoded := orjson.loads(body)).get("blocks")
            and not decoded.get("histograms")
        ][-1]
        points = f"/api/v1/runs/{run_id}/points"
        moved = 10**9
        results = []
        for gap in [0.0, *gaps]:  # the first pass warms the run's state and is not reported
            bodies = []
            for i in range(n):
                moved += 10**6
                bodies.append(_moved(scalars, moved, f"g{gap}-{i}"))
            spent = 0.0
            for body in bodies:
                if gap:
                    await asyncio.sleep(gap)
                began = time.process_time()
                await _call(app, "POST", points, body)
                spent += time.process_time() - began
            results.append(1000 * spent / n)
        return results[1:]


_DOCUMENT = [{f"k{i}": list(range(20))} for i in range(200)]


def _workload() -> None:
    json.loads(json.dumps(_DOCUMENT))


async def machine(gaps: list[float], n: int) -> list[tuple[float, float]]:
    """CPU milliseconds of the fixed workload (inline, through a thread) after each gap."""
    loop = asyncio.get_running_loop()
    results = []
    with ThreadPoolExecutor(1) as pool:
        for gap in gaps:
            inline, threaded = [], []
            for _ in range(n):
                for times, hop in ((inline, False), (threaded, True)):
                    if gap:
                        await asyncio.sleep(gap)
                    began = time.process_time()
                    if hop:
                        await loop.run_in_executor(pool, _workload)
                    else:
                        _workload()
                    times.append(time.process_time() - began)
            results.append((1000 * statistics.median(inline), 1000 * statistics.median(threaded)))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gaps", type=float, nargs="+", default=[0.0, 0.05, 0.3])
    parser.add_argument("--requests", type=int, default=60, help="per gap")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=12, help="ViT-tiny steps captured")
    parser.add_argument("--db", help="database URL (default: a SQLite file in a temporary folder)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as scratch:
        requests = capture("vit_tiny", args.steps, scratch)
        rounds = []
        for r in range(args.rounds):
            db = args.db or f"sqlite:///{scratch}/warmth{r}.db"
            rounds.append(asyncio.run(measure(db, requests, args.gaps, args.requests)))
    print(f"ViT-tiny logged-scalars batch, in process, {args.requests} requests per gap, "
          f"median of {args.rounds} rounds")  # fmt: skip
    print("| idle gap before each request | CPU per request (ms) | range (ms) |")
    print("|---:|---:|---:|")
    for i, gap in enumerate(args.gaps):
        values = [r[i] for r in rounds]
        print(
            f"| {gap * 1000:.0f} ms | {statistics.median(values):.2f} | "
            f"{min(values):.2f}–{max(values):.2f} |"
        )
    print()
    print("| idle gap | fixed workload inline (ms) | through a worker thread (ms) |")
    print("|---:|---:|---:|")
    for gap, (inline, threaded) in zip(args.gaps, asyncio.run(machine(args.gaps, 30)), strict=True):
        print(f"| {gap * 1000:.0f} ms | {inline:.2f} | {threaded:.2f} |")


if __name__ == "__main__":
    main()
