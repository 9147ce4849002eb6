"""Under ``torch.distributed`` a job is one run: rank 0 streams the per-layer statistics, every
rank a summary under ``rank/<r>/``, and the health checks compare the ranks.

The jobs are real: one process per rank, the gloo backend on CPU, ``DistributedDataParallel``,
each rank talking to a real server (or writing its own journal, offline).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import torch

import trickscope
from tests.helpers import LiveServer, free_port, rank_env, wait_until
from tests.integration.ddp_worker import DRIFT_AFTER, STEPS
from trickscope.distributed import Rank
from trickscope.run import Run

WORKER = Path(__file__).with_name("ddp_worker.py")


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def launch(world_size: int, fault: str, env: dict[str, str], slow_rank: int = -1) -> str:
    """Run the worker on ``world_size`` ranks, as ``torchrun`` would; returns the run id."""
    port = str(free_port())
    processes = [
        subprocess.Popen(
            [sys.executable, str(WORKER), "--fault", fault, "--slow-rank", str(slow_rank)],
            env={**os.environ, **env, **rank_env(rank, world_size, port)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(world_size)
    ]
    ids = set()
    for rank, process in enumerate(processes):
        out, err = process.communicate(timeout=240)
        assert process.returncode == 0, f"rank {rank} failed:\n{err[-4000:]}"
        reported = json.loads(out.strip().splitlines()[-1])
        assert reported["rank"] == rank
        ids.add(reported["run_id"])
    assert len(ids) == 1, f"the ranks reported to different runs: {ids}"
    return ids.pop()


def series_names(url: str, run_id: str) -> set[str]:
    return {s["name"] for s in get_json(f"{url}/api/v1/runs/{run_id}/series")["series"]}


def points(url: str, run_id: str, name: str) -> tuple[list[int], list[float]]:
    query = urllib.parse.urlencode({"name": name})
    series = get_json(f"{url}/api/v1/runs/{run_id}/points?{query}")
    return series["step"], series["value"]


def findings(url: str, run_id: str) -> dict[str, dict[str, Any]]:
    report = get_json(f"{url}/api/v1/runs/{run_id}/health")
    return {finding["check"]: finding for finding in report["findings"]}


def test_a_job_is_one_run_and_the_straggler_is_named(live_server: LiveServer) -> None:
    url = live_server.url
    run_id = launch(3, "slow-input", {"TRICKSCOPE_URL": url}, slow_rank=2)

    (run,) = get_json(f"{url}/api/v1/runs?project=ddp")["runs"]
    assert run["id"] == run_id and run["status"] == "finished"
    assert run["system"]["distributed"] == {"world_size": 3, "backend": "gloo"}
    # Each rank declared its host and process.
    ranks = run["ranks"]
    assert sorted(ranks) == ["0", "1", "2"]
    assert sorted(info["local_rank"] for info in ranks.values()) == [0, 1, 2]
    assert len({info["pid"] for info in ranks.values()}) == 3
    assert {info["hostname"] for info in ranks.values()} == {socket.gethostname()}
    names = series_names(url, run_id)
    # Layers are named as in the module DDP wraps, without its "module." prefix.
    layers = ["0.weight", "0.bias", "2.weight", "2.bias"]
    # Per-layer statistics and the tricks' reports once, from rank 0.
    assert {f"grad_norm/{layer}" for layer in layers} <= names
    assert not [name for name in names if "module." in name]
    assert {"grad_norm/total", "clip/pre_norm", "loss/train"} <= names
    assert not [name for name in names if name.startswith(("rank/1/clip", "rank/2/clip"))]
    for rank in range(3):
        summary = {f"rank/{rank}/{stat}" for stat in ("grad_norm", "weight_norm", "data_time")}
        assert summary | {f"rank/{rank}/step_time"} <= names
        steps, _ = points(url, run_id, f"rank/{rank}/weight_norm")
        assert steps == list(range(STEPS))
    # The other ranks' own logs, under their rank; rank 0's where they always were.
    assert {"rank/1/loss/train", "rank/2/loss/train"} <= names
    assert "rank/0/loss/train" not in names
    hist = get_json(f"{url}/api/v1/runs/{run_id}/histograms/names")
    assert hist["names"] and not [name for name in hist["names"] if name.startswith("rank/")]

    # Replicas agree: the same total norms on every rank, at every step.
    for stat in ("grad_norm", "weight_norm"):
        reference = points(url, run_id, f"rank/0/{stat}")[1]
        assert points(url, run_id, f"rank/1/{stat}")[1] == reference
        assert points(url, run_id, f"rank/2/{stat}")[1] == reference
    _, data_time = points(url, run_id, "rank/2/data_time")
    assert min(data_time) > 0.07  # it sleeps 80 ms before each batch
    found = findings(url, run_id)
    assert "ranks-gradients-differ" not in found and "ranks-weights-differ" not in found
    straggler = found["straggler"]
    assert straggler["title"].startswith("Rank 2 waits"), straggler
    assert straggler["detail"].endswith(f"a busier host on {socket.gethostname()}.")


def test_replicas_that_drift_apart_are_named_with_the_step(live_server: LiveServer) -> None:
    run_id = launch(2, "drift", {"TRICKSCOPE_URL": live_server.url})

    found = findings(live_server.url, run_id)
    drift = found["ranks-weights-differ"]
    assert drift["severity"] == "error" and drift["step"] == DRIFT_AFTER + 1
    assert drift["title"] == f"Weights of rank 1 differ from rank 0's from step {DRIFT_AFTER + 1}"
    assert "ranks-gradients-differ" not in found


def test_offline_ranks_journal_apart_and_sync_in_any_order(
    live_server: LiveServer, tmp_path: Path
) -> None:
    journal_dir = tmp_path / "journal"
    env = {"TRICKSCOPE_OFFLINE": "1", "TRICKSCOPE_JOURNAL_DIR": str(journal_dir)}
    run_id = launch(2, "no-sync", env)

    journals = sorted(path.name for path in journal_dir.iterdir())
    assert journals == [f"{run_id}.jsonl", f"{run_id}.rank1.jsonl"]
    # Rank 1's journal named first: sync still creates the run (rank 0's journal) before it.
    command = [sys.executable, "-m", "trickscope_cli", "sync", "--url", live_server.url,
               str(journal_dir / journals[1]), str(journal_dir / journals[0])]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr

    assert "rank/1/weight_norm" in series_names(live_server.url, run_id)
    found = findings(live_server.url, run_id)
    # Never all-reduced: the ranks' own gradients differ from the first step.
    unsynced = found["ranks-gradients-differ"]
    assert unsynced["step"] == 0 and "no_sync()" in unsynced["detail"]
    assert "ranks-weights-differ" not in found  # the cause is reported, not its consequence


def test_a_rank_that_reports_before_rank_0_created_the_run_is_not_lost(
    live_server: LiveServer, tmp_path: Path
) -> None:
    agent = trickscope.AgentConfig.from_env(
        {}, url=live_server.url, journal_dir=str(tmp_path), flush_secs=0.05
    )
    run_id = "d" * 32
    second = Run(project="early", name=None, config=None, tags=None, agent=agent,
                 rank=Rank(1, 2, "gloo"), run_id=run_id)  # fmt: skip
    for step in range(5):
        second.log({"loss": torch.tensor(2.0**-step)}, step=step)
    # Its batches meet "no such run" for a while: they wait, as for an outage.
    wait_until(
        lambda: second.sender is not None and second.sender.delivery.failures >= 2, timeout=10
    )
    first = Run(project="early", name=None, config=None, tags=None, agent=agent,
                rank=Rank(0, 2, "gloo"), run_id=run_id)  # fmt: skip
    first.log({"loss": 0.5}, step=0)
    second.finish()
    first.finish()

    assert second.incidents.errors == 0
    steps, values = points(live_server.url, run_id, "rank/1/loss")
    assert steps == list(range(5)) and values == [2.0**-step for step in steps]
    run = get_json(f"{live_server.url}/api/v1/runs/{run_id}")
    assert run["status"] == "finished" and run["project"] == "early"
