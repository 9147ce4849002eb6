"""Server CPU of one ingest request, per kind, from an agent's real requests replayed.

    python bench/ingest_requests.py [--model vit_tiny|mlp] [--backends sqlite postgresql]
                                    [--requests 300] [--rounds 3]

First the agent's requests are captured: a real server (in this process, behind a recorder)
and a real agent training ``--model`` for ``--steps`` steps: ``vit_tiny`` at watch's default
cadence (one request per step on a CPU, whose step is longer than the 0.5 s flush: the run's
logged scalars; every 10th step a request of statistic blocks), or ``mlp`` (the 75-layer MLP of
``bench/stats_ingest.py`` at ``every=1``: most requests carry blocks). Then, per backend, a fresh
``trickscope serve`` process gets the captured run's requests once (run, layers, setup, every
batch: series created, state warm), then ``--requests`` copies of the last request of each kind
(``scalars``: series only; ``blocks``: with statistic blocks; ``histograms``: the one that
carries watch's histograms, every ``hist_every`` steps), each with its steps moved past
every stored one and a batch id of its own, on one keep-alive connection as the agent sends
them. Reported: the server process' CPU time (its POSIX CPU clock, nanoseconds, as in
``bench/server_per_step.py``) per request, less its idle CPU, the median of ``--rounds``
rounds; and ``GET /healthz`` the same way, the floor of any request.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _server_cpu import process_cpu_seconds  # noqa: E402

PG_URL = "postgresql+psycopg://trickscope:trickscope@127.0.0.1:5432/trickscope_test"
Request = tuple[str, str, bytes]  # method, path, body


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def capture(model: str, steps: int, scratch: str) -> list[Request]:
    """The agent's requests (bodies decompressed) while training ``model`` for ``steps``."""
    import torch
    import uvicorn

    import trickscope
    from trickscope_server.app import create_app
    from trickscope_server.config import Settings
    from trickscope_server.services.ingest import decompress

    app = create_app(Settings(database_url=f"sqlite:///{scratch}/capture.db"))
    seen: list[Request] = []

    async def recorder(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await app(scope, receive, send)
        messages, body = [], b""
        while True:
            message = await receive()
            messages.append(message)
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        encoding = dict(scope["headers"]).get(b"content-encoding")
        plain = decompress(body, encoding=encoding and encoding.decode(), max_bytes=1 << 30)
        seen.append((scope["method"], scope["path"], plain))
        queued = iter(messages)

        async def replay() -> Any:
            return next(queued, None) or await receive()

        return await app(scope, replay, send)

    port = free_port()
    config = uvicorn.Config(recorder, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    run = trickscope.init(project="bench", name=model, url=f"http://127.0.0.1:{port}")
    if model == "mlp":
        net = torch.nn.Sequential(*[torch.nn.Linear(16, 16) for _ in range(75)])
        x, loss_of = torch.randn(32, 16), lambda out: out.pow(2).mean()
        run.watch(
            net, optimizer := torch.optim.SGD(net.parameters(), lr=1e-3), every=1, hist_every=0
        )
    else:
        sys.path.insert(0, str(HERE))
        from models import build

        net = build(model)
        x, y = torch.randn(32, 3, 64, 64), torch.randint(0, 10, (32,))
        loss_of = lambda out: torch.nn.functional.cross_entropy(out, y)  # noqa: E731
        run.watch(net, optimizer := torch.optim.AdamW(net.parameters(), lr=1e-3))
    for step in range(steps):
        loss = loss_of(net(x))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        run.log({"loss": loss.detach()}, step=step)
    run.finish()
    server.should_exit = True
    return seen


def _has_histograms(batch: dict[str, Any]) -> bool:
    return bool(batch.get("histograms") or batch.get("histogram_blocks"))


def _moved(body: bytes, by: int, batch_id: str) -> bytes:
    """The batch with every steps column moved by ``by`` and a new batch id."""
    data = orjson.loads(body)
    data["batch_id"] = batch_id
    done: dict[str, str] = {}
    items = [
        *data.get("series", []),
        *data.get("blocks", []),
        *data.get("histograms", []),
        *data.get("histogram_blocks", []),
    ]
    for item in items:
        text = item.get("steps")
        if isinstance(text, str):
            if text not in done:
                steps = np.frombuffer(base64.b64decode(text), dtype="<i8") + by
                done[text] = base64.b64encode(steps.astype("<i8").tobytes()).decode()
            item["steps"] = done[text]
    return orjson.dumps(data)


def measure(db_url: str, requests: list[Request], args: argparse.Namespace) -> dict[str, float]:
    """Server CPU milliseconds per request of each kind, on a fresh server."""
    port = free_port()
    process = _serve(db_url, port)
    try:
        run_id = uuid.uuid4().hex
        own = [
            (m, "/".join(run_id if len(p) == 32 else p for p in path.split("/")), b)
            for m, path, b in requests
            if not path.endswith("/finish")
        ]
        batches = [(p, b) for m, p, b in own if p.endswith("/points")]
        decoded = [(b, orjson.loads(b)) for _, b in batches]
        kinds = {
            "scalars": [b for b, d in decoded if not d.get("blocks") and not _has_histograms(d)],
            "blocks": [b for b, d in decoded if d.get("blocks") and not _has_histograms(d)],
            "histograms": [b for b, d in decoded if _has_histograms(d)],
        }
        kinds = {kind: found[-1:] for kind, found in kinds.items()}
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        for method, path, body in own:
            _send(connection, method, path, body)
        time.sleep(1.0)
        began, spent = time.monotonic(), process_cpu_seconds(process.pid)
        time.sleep(args.idle)
        idle = (process_cpu_seconds(process.pid) - spent) / (time.monotonic() - began)
        out = {}
        moved = 10**9
        targets = {"healthz": [("GET", "/healthz", b"")] * args.requests}
        points = f"/api/v1/runs/{run_id}/points"
        for kind, found in kinds.items():
            if found:
                targets[kind] = []
                for i in range(args.requests):
                    moved += 10**6
                    targets[kind].append(("POST", points, _moved(found[0], moved, f"{kind}{i}")))
        for kind, sends in targets.items():
            per_round = len(sends) // args.rounds
            results = []
            for r in range(args.rounds):
                began, spent = time.monotonic(), process_cpu_seconds(process.pid)
                for method, path, body in sends[r * per_round : (r + 1) * per_round]:
                    _send(connection, method, path, body or None)
                    time.sleep(args.gap)  # not back to back: the agent flushes every 0.5 s
                wall = time.monotonic() - began
                used = process_cpu_seconds(process.pid) - spent - idle * wall
                results.append(1000 * used / per_round)
            out[kind] = statistics.median(results)
        return out
    finally:
        process.terminate()
        process.wait(timeout=30)


def _serve(db_url: str, port: int) -> Any:
    import subprocess

    command = [sys.executable, "-m", "trickscope_cli", "serve", "--db", db_url, "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            _send(http.client.HTTPConnection("127.0.0.1", port, timeout=2), "GET", "/healthz", None)
            return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the trickscope server did not start")


def _send(
    connection: http.client.HTTPConnection, method: str, path: str, body: bytes | None
) -> None:
    connection.request(method, path, body=body, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    answer = response.read()
    if response.status >= 300:
        raise RuntimeError(f"{method} {path}: {response.status} {answer[:300]!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="vit_tiny", choices=["vit_tiny", "mlp"])
    parser.add_argument("--steps", type=int, default=12, help="steps trained for the capture")
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"])
    parser.add_argument("--pg-url", default=os.environ.get("TRICKSCOPE_TEST_PG_URL", PG_URL))
    parser.add_argument("--requests", type=int, default=300, help="per kind, all rounds")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gap", type=float, default=0.01, help="seconds between requests")
    parser.add_argument("--idle", type=float, default=3.0, help="seconds of idle CPU measured")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as scratch:
        requests = capture(args.model, args.steps, scratch)
        print(f"{args.model}: {len(requests)} requests captured over {args.steps} steps")
        print("| backend | request | server CPU per request (ms) |")
        print("|---|---|---:|")
        for backend in args.backends:
            db = f"sqlite:///{scratch}/{backend}.db" if backend == "sqlite" else args.pg_url
            for kind, ms in measure(db, requests, args).items():
                print(f"| {backend} | {kind} | {ms:.2f} |", flush=True)


if __name__ == "__main__":
    main()
