"""``bench/ingest.py --agent``: ``run.log`` end to end, from the training loop's first call to
every point stored and readable through the API, with each process's CPU time.

Each round starts a real server (its own SQLite file), logs ``--steps`` dicts of ``--keys``
values (Python floats, or one-element tensors with ``--values tensor``; built before the clock
starts, as a training loop has them) with one ``run.log`` per step, calls ``finish`` (which
returns once the server has acknowledged every batch) and then reads every series' point count
back through ``GET /runs/{id}/series``. CPU seconds over the same window: the training thread
(``time.thread_time``), the agent's other threads (the process's CPU time less the training
thread's: the sender thread) and the server process (``/proc``).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _peers import start_trickscope

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(stat_path: str) -> float:
    """utime + stime of a process or thread, from its ``/proc/.../stat``."""
    with open(stat_path) as file:
        fields = file.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


@dataclass
class AgentRound:
    seconds: float  # first log call to finish() returned
    log_seconds: float  # the loop of run.log calls alone
    train_cpu: float
    sender_cpu: float
    server_cpu: float
    stored: int


def wide_dicts(keys: int, steps: int, values: str = "float") -> list[dict[str, Any]]:
    """``steps`` dicts of ``keys`` metrics; a few values are NaN and ±Inf, which must arrive."""
    names = [f"train/metric_{k:05d}" for k in range(keys)]
    special = (math.nan, math.inf, -math.inf)
    dicts = [
        {
            name: special[(s + k) % 3] if (s * keys + k) % 9973 == 0 else s + k / keys
            for k, name in enumerate(names)
        }
        for s in range(steps)
    ]
    if values == "tensor":
        import torch

        return [{name: torch.tensor(value) for name, value in d.items()} for d in dicts]
    return dicts


def _series_counts(url: str, run_id: str) -> dict[str, int]:
    with urllib.request.urlopen(f"{url}/api/v1/runs/{run_id}/series", timeout=120) as response:
        body = json.loads(response.read())
    return {series["name"]: series["count"] for series in body["series"]}


def agent_round(keys: int, steps: int, scratch: Path, values: str = "float") -> AgentRound:
    import trickscope

    dicts = wide_dicts(keys, steps, values)
    server = start_trickscope(f"sqlite:///{scratch / 'agent.db'}")
    try:
        server_stat = f"/proc/{server.process.pid}/stat"
        run = trickscope.init(
            project="bench-agent-ingest", url=server.url, journal_dir=scratch, quiet=True
        )
        sender = run.sender
        assert sender is not None
        server_before, process_before = cpu_seconds(server_stat), time.process_time()
        train_before = time.thread_time()
        began = time.perf_counter()
        for step, metrics in enumerate(dicts):
            run.log(metrics, step=step)
        logged = time.perf_counter()
        run.finish(timeout=300)
        ended = time.perf_counter()
        train_cpu = time.thread_time() - train_before
        sender_cpu = time.process_time() - process_before - train_cpu
        server_cpu = cpu_seconds(server_stat) - server_before
        counts = _series_counts(server.url, run.id)
        if run.incidents.errors or sender.journal_path is not None:
            raise RuntimeError(f"the run lost data: {run.incidents.errors} errors, journal left")
        stored = sum(counts.get(name, 0) for name in dicts[0])
        return AgentRound(ended - began, logged - began, train_cpu, sender_cpu, server_cpu, stored)
    finally:
        server.stop()


def bench_agent(keys: int, steps: int, repeats: int, values: str = "float") -> list[AgentRound]:
    rounds = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as scratch:
            rounds.append(agent_round(keys, steps, Path(scratch), values))
    return rounds


def print_agent_table(keys: int, steps: int, rounds: list[AgentRound], values: str) -> None:
    import trickscope

    points = keys * steps
    rates = [points / r.seconds for r in rounds]
    print(
        f"\nrun.log end to end: {steps} steps x {keys:,} keys ({values}) = {points:,} points, "
        f"SQLite; agent {Path(trickscope.__file__).parent}"
    )
    print(
        "| round | seconds | points/s | log loop s | CPU s: training | sender | server | stored |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for index, (r, rate) in enumerate(zip(rounds, rates, strict=True), 1):
        print(
            f"| {index} | {r.seconds:.2f} | {rate:,.0f} | {r.log_seconds:.2f} | "
            f"{r.train_cpu:.2f} | {r.sender_cpu:.2f} | {r.server_cpu:.2f} | {r.stored:,} |"
        )
    med = statistics.median
    print(
        f"| median | {med(r.seconds for r in rounds):.2f} | {med(rates):,.0f} | "
        f"{med(r.log_seconds for r in rounds):.2f} | {med(r.train_cpu for r in rounds):.2f} | "
        f"{med(r.sender_cpu for r in rounds):.2f} | {med(r.server_cpu for r in rounds):.2f} | |"
    )
    per = 1e9 / points
    print(
        f"CPU per point (median): training {med(r.train_cpu for r in rounds) * per:.0f} ns, "
        f"sender {med(r.sender_cpu for r in rounds) * per:.0f} ns, "
        f"server {med(r.server_cpu for r in rounds) * per:.0f} ns"
    )
    if any(r.stored != points for r in rounds):
        raise SystemExit(f"points lost: stored {[r.stored for r in rounds]} of {points:,}")
