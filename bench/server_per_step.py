"""Server CPU per training step, end to end: the real agent training ViT-tiny against a real
``trickscope serve`` process, at three step rates.

    python bench/server_per_step.py [--backends sqlite postgresql] [--rounds 3]
                                    [--cpu-steps 20] [--gpu-like-steps 300]
                                    [--optimizer-only-steps 1000] [--breakdown] [--followed]

Per backend, one ``trickscope serve`` subprocess (a SQLite file in a temporary directory, or
PostgreSQL at ``--pg-url``: ``TRICKSCOPE_TEST_PG_URL`` or the local test database) gets one short
unmeasured run (first-request costs: imports, statement caches), then its idle CPU rate is
measured. Each round then trains ``bench/models.py``'s ViT-tiny in this process with the real
agent as a user would: ``trickscope.init``, ``run.watch(model, optimizer)`` at watch's defaults,
``run.log({"loss": ...})`` every step, ``run.finish()``; forward, backward and AdamW step, on
random data, every step. Three step rates, alternated within each round:

- ``cpu``: batch 32 at the model's 64x64 images, the natural CPU workload; a step is longer than
  the agent's 0.5 s flush, so each step is a request of its own.
- ``gpu-like``: the same model, agent and defaults at batch 1, the fastest full step on a CPU;
  several steps share a flush, as ~10-25 steps do on a GPU.
- ``optimizer-only``: the same model, agent and defaults, but each step is the AdamW step alone
  on gradients set once (random, no forward or backward): ~15-20 ms, the pace of a ViT-tiny step
  on a GPU, so the requests are the ones a GPU run sends (a 0.5 s flush holds ~30 steps). Only
  the step rate is borrowed: the gradients, weights and statistics the agent reads are real
  tensors of the model, and every request is the real agent's.

Measured over the whole run, from ``init`` to ``finish`` returning plus the server going quiet
again (ingest compacts series after answering): the server process' CPU time (its POSIX CPU
clock, nanoseconds, every thread, exited ones included) less its idle rate over the same wall
time, the idle rate being the mean of ``--idle`` seconds measured before and after each round
(the box drifts over a long round, and at a CPU's pace the idle CPU is most of the server's);
the steps per second of the training loop; the HTTP requests the agent sent (counted in this
process at ``http.client``, for the server's port only) and the batches the server stored (its
``batches`` table). Reported: the median over ``--rounds``, the range of the CPU per step, and
the steady cost, per step and per second of training: the run's CPU without its own requests
(create, layers, setup, finish, and its first batch of per-layer statistics, which creates their
1,650 series: once per run whatever its length, so a short run overstates them). A run starts
with a histogram batch (``hist_every=100``): the 20-step ``cpu`` run carries one, five times the
long-run share. ``--breakdown`` adds the server's CPU per request kind: from a request's sending
to its response's headers, less idle (the rest, e.g. compaction after the answer, is
"outside"; a wait for a follower, held while other requests come, counts theirs too).

By default nobody follows the runs live, so the agent sends its logged points and statistics
every ``unfollowed_flush_secs`` (300 s), histograms too. ``--followed`` holds a live stream
on each run while it trains, as an open run page does: the agent then sends every ``flush_secs``
(0.5 s), and the server's CPU includes the stream's reads and messages.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _peers import Server, start_trickscope  # noqa: E402
from _server_cpu import (  # noqa: E402
    RequestCounter,
    idle_rate,
    process_cpu_seconds,
    run_requests_cpu,
    wait_quiet,
)

PG_URL = "postgresql+psycopg://trickscope:trickscope@127.0.0.1:5432/trickscope_test"
RATES = ("cpu", "gpu-like", "optimizer-only")


@dataclass
class Round:
    rate: str
    batch: int
    steps: int
    step_seconds: float  # the training loop's wall time per step
    requests: int
    batches: int  # stored by the server
    server_cpu: float  # seconds, idle CPU subtracted
    wall_seconds: float  # from init to the server going quiet after finish
    by_kind: dict[str, list[float]]  # kind -> [requests, server CPU seconds in them]


def stored_batches(db_url: str, run_id: str) -> int:
    """Batches the server stored for the run, read from its database."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(db_url)
    try:
        with engine.connect() as conn:
            query = sqlalchemy.text("SELECT count(*) FROM batches WHERE run_id = :run")
            return int(conn.execute(query, {"run": run_id}).scalar_one())
    finally:
        engine.dispose()


class LiveViewer:
    """A live stream held on a run, as an open run page holds one: waits for the run to exist,
    then reads the stream until closed. Raw sockets, so the request counter does not see it."""

    def __init__(self, url: str, run_id: str) -> None:
        self._address = urllib.request.urlparse(url).netloc.split(":")
        self._url, self._run_id = url, run_id
        self._socket: socket.socket | None = None
        self._closed = threading.Event()
        self.received = 0  # bytes of the stream read
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        run = f"{self._url}/api/v1/runs/{self._run_id}"
        while not self._closed.is_set():
            try:
                with urllib.request.urlopen(urllib.request.Request(run), timeout=10):
                    break
            except urllib.error.HTTPError:
                time.sleep(0.05)  # the agent's first request has not created the run yet
        host, port = self._address[0], int(self._address[1])
        with socket.create_connection((host, port)) as sock:
            self._socket = sock
            request = f"GET /api/v1/runs/{self._run_id}/events HTTP/1.1\r\nHost: {host}\r\n\r\n"
            sock.sendall(request.encode())
            while not self._closed.is_set():
                try:
                    data = sock.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                self.received += len(data)

    def close(self) -> None:
        self._closed.set()
        if self._socket is not None:
            try:
                self._socket.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(10)


def train_round(
    server: Server, db_url: str, counter: RequestCounter, rate: str, batch: int, steps: int,
    idle: float, followed: bool = False,
) -> Round:  # fmt: skip
    """Train ViT-tiny for ``steps`` with the agent; the server's CPU over the whole run."""
    import torch
    from models import build

    import trickscope

    torch.manual_seed(0)
    model = build("vit_tiny")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randn(batch, 3, 64, 64), torch.randint(0, 10, (batch,))
    full_steps = rate != "optimizer-only"
    if not full_steps:
        loss = torch.nn.functional.cross_entropy(model(x), y).detach()
        for param in model.parameters():
            param.grad = torch.randn_like(param) * 1e-3
    pid = server.process.pid
    counter.reset(server.url, pid, idle)
    began, spent = time.monotonic(), process_cpu_seconds(pid)
    run = trickscope.init(project="bench-server-per-step", name=rate, url=server.url, quiet=True)
    viewer = LiveViewer(server.url, run.id) if followed else None
    run.watch(model, optimizer)
    loop_began = time.perf_counter()
    for step in range(steps):
        if full_steps:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        optimizer.step()
        run.log({"loss": loss.detach()}, step=step)
    loop_seconds = time.perf_counter() - loop_began
    run.finish(timeout=120)
    if viewer is not None:
        viewer.close()
        if not viewer.received:
            raise RuntimeError(f"{rate}: the live stream received nothing")
    wait_quiet(pid, idle)
    wall = time.monotonic() - began
    server_cpu = process_cpu_seconds(pid) - spent - idle * wall
    requests = counter.requests
    by_kind = {kind: list(entry) for kind, entry in counter.by_kind.items()}
    sender = run.sender
    if run.incidents.errors or (sender is not None and sender.journal_path is not None):
        raise RuntimeError(f"{rate}: the run lost data ({run.incidents.errors} errors)")
    batches = stored_batches(db_url, run.id)
    _delete_run(server.url, run.id)
    step_seconds = loop_seconds / steps
    return Round(rate, batch, steps, step_seconds, requests, batches, server_cpu, wall, by_kind)


def _delete_run(url: str, run_id: str) -> None:
    request = urllib.request.Request(f"{url}/api/v1/runs/{run_id}", method="DELETE")
    with urllib.request.urlopen(request, timeout=60):
        pass


def bench_backend(db_url: str, args: argparse.Namespace) -> dict[str, list[Round]]:
    """Every round of each step rate on one fresh server."""
    server = start_trickscope(db_url)
    rounds: dict[str, list[Round]] = {rate: [] for rate in args.rates}
    try:
        with RequestCounter() as counter:
            # Unmeasured: the server's first requests import and cache what later ones reuse.
            idle = idle_rate(server.process.pid, args.idle)
            train_round(server, db_url, counter, "warm-up", 1, 3, idle)
            idle = idle_rate(server.process.pid, args.idle)
            for _ in range(args.rounds):
                for rate in args.rates:
                    batch = args.cpu_batch if rate == "cpu" else args.gpu_like_batch
                    steps = {
                        "cpu": args.cpu_steps,
                        "gpu-like": args.gpu_like_steps,
                        "optimizer-only": args.optimizer_only_steps,
                    }[rate]
                    done = train_round(
                        server, db_url, counter, rate, batch, steps, idle, args.followed
                    )
                    # The idle rate is measured on both sides of each round: the mean of the
                    # two is subtracted, which follows the box's drift over a long run.
                    after = idle_rate(server.process.pid, args.idle)
                    done.server_cpu -= (after - idle) / 2 * done.wall_seconds
                    rounds[rate].append(done)
                    idle = after
    finally:
        server.stop()
    return rounds


def print_rows(backend: str, rounds: dict[str, list[Round]]) -> None:
    med = statistics.median
    for rate, done in rounds.items():
        per_step = [1000 * r.server_cpu / r.steps for r in done]
        steady_cpu = [r.server_cpu - run_requests_cpu(r.by_kind, first_blocks=True) for r in done]
        steady = [1000 * cpu / r.steps for cpu, r in zip(steady_cpu, done, strict=True)]
        per_second = [
            1000 * cpu / (r.steps * r.step_seconds) for cpu, r in zip(steady_cpu, done, strict=True)
        ]
        print(
            f"| {backend} | {rate} | {done[0].batch} | {done[0].steps} | "
            f"{1000 * med(r.step_seconds for r in done):.0f} | "
            f"{med(1 / r.step_seconds for r in done):.2f} | "
            f"{med(r.requests / r.steps for r in done):.2f} | "
            f"{med(r.batches / r.steps for r in done):.2f} | "
            f"{med(per_step):.3f} | {min(per_step):.3f}–{max(per_step):.3f} | "
            f"{med(steady):.3f} | {min(steady):.3f}–{max(steady):.3f} | {med(per_second):.3f} |",
            flush=True,
        )


def print_breakdown(results: dict[str, dict[str, list[Round]]]) -> None:
    """Where each run's server CPU went, per request kind, summed over the rounds."""
    print("\n| backend | rate | request | per run | server CPU/request (ms) | share of run |")
    print("|---|---|---|---:|---:|---:|")
    for backend, rounds in results.items():
        for rate, done in rounds.items():
            total = sum(r.server_cpu for r in done)
            kinds: dict[str, list[float]] = {}
            for r in done:
                for kind, (count, cpu) in r.by_kind.items():
                    entry = kinds.setdefault(kind, [0, 0.0])
                    entry[0] += count
                    entry[1] += cpu
            for kind, (count, cpu) in sorted(kinds.items(), key=lambda item: -item[1][1]):
                print(
                    f"| {backend} | {rate} | `{kind}` | {count / len(done):.1f} | "
                    f"{1000 * cpu / count:.2f} | {cpu / total:.0%} |"
                )
            outside = total - sum(cpu for _, cpu in kinds.values())
            print(f"| {backend} | {rate} | outside requests (compaction, ...) | | | "
                  f"{outside / total:.0%} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", nargs="+", default=["sqlite"])
    parser.add_argument("--pg-url", default=os.environ.get("TRICKSCOPE_TEST_PG_URL", PG_URL))
    parser.add_argument("--rates", nargs="+", default=list(RATES), choices=list(RATES))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cpu-steps", type=int, default=20)
    parser.add_argument("--cpu-batch", type=int, default=32)
    parser.add_argument("--gpu-like-steps", type=int, default=300)
    parser.add_argument("--gpu-like-batch", type=int, default=1)
    parser.add_argument("--optimizer-only-steps", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training")
    parser.add_argument("--idle", type=float, default=2.0, help="seconds of idle CPU measured")
    parser.add_argument(
        "--breakdown", action="store_true", help="also the server CPU by request kind"
    )
    parser.add_argument(
        "--followed", action="store_true", help="hold a live stream on each run, as a run page"
    )
    args = parser.parse_args()
    if min(args.rounds, args.cpu_steps, args.gpu_like_steps, args.optimizer_only_steps) < 1:
        parser.error("--rounds and every --*-steps must be at least 1")
    import torch

    torch.set_num_threads(args.threads)
    print(
        f"ViT-tiny (64x64), real agent at watch's defaults, {args.rounds} rounds, "
        f"{args.threads} torch thread(s), "
        f"{'a live stream on each run' if args.followed else 'nobody following live'}; medians"
    )
    print(
        "| backend | rate | batch | steps | step (ms) | steps/s | requests/step | "
        "batches/step | server CPU/step (ms) | range (ms) | steady, per step (ms) | range (ms) | "
        "steady, per second of training (ms/s) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    results = {}
    for backend in args.backends:
        with tempfile.TemporaryDirectory() as scratch:
            db = f"sqlite:///{scratch}/server.db" if backend == "sqlite" else args.pg_url
            results[backend] = bench_backend(db, args)
            print_rows(backend, results[backend])
    if args.breakdown:
        print_breakdown(results)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
