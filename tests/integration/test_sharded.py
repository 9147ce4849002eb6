"""FSDP2 (``fully_shard``) and DTensor parameters: every rank computes the statistics of its own
shards, and rank 0 reports those of the whole parameters, equal to the same model unsharded.

The job is real: two processes, the gloo backend on CPU (see ``fsdp_worker.py`` for the cases
one launch checks).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import LiveServer, free_port, rank_env
from tests.integration.fsdp_worker import RUN_STEPS
from tests.integration.test_distributed import get_json, points, series_names

WORKER = Path(__file__).with_name("fsdp_worker.py")


def launch(world_size: int, env: dict[str, str], *args: str) -> list[dict[str, Any]]:
    """Run the worker on ``world_size`` ranks; each rank's last JSON line."""
    port = str(free_port())
    processes = [
        subprocess.Popen(
            [sys.executable, str(WORKER), *args],
            env={**os.environ, **env, **rank_env(rank, world_size, port)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(world_size)
    ]
    results = []
    for rank, process in enumerate(processes):
        out, err = process.communicate(timeout=240)
        assert process.returncode == 0, f"rank {rank} failed:\n{err[-4000:]}\n{out[-1000:]}"
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def test_sharded_statistics_equal_the_unsharded_models(live_server: LiveServer) -> None:
    url = live_server.url
    first, second = launch(2, {"TRICKSCOPE_URL": url})

    # Fully sharded (with an empty shard), partly sharded, and accumulated without sync: the
    # merged statistics and histograms match the unsharded copy's at every step.
    assert first["mismatches"] == []
    assert first["checked"] > 600
    assert second["mismatches"] == []

    # Through trickscope.init: one run, its per-layer series named as the unsharded module's,
    # sent by rank 0 only, with the merged values.
    run_id = first["run_id"]
    assert second["run_id"] == run_id
    (run,) = get_json(f"{url}/api/v1/runs?project=fsdp")["runs"]
    assert run["id"] == run_id and run["status"] == "finished"
    names = series_names(url, run_id)
    reference: dict[str, float] = first["reference"]
    assert set(reference) <= names
    for key, want in reference.items():
        steps, values = points(url, run_id, key)
        assert steps == list(range(RUN_STEPS)), key
        got = float(values[-1])  # the API writes NaN as "NaN"
        if math.isnan(want):
            assert math.isnan(got), key
        else:
            assert math.isclose(got, want, rel_tol=1e-4, abs_tol=1e-6), (key, got, want)
    assert not [name for name in names if name.startswith("rank/1/") and "grad_norm/" in name]
    # Every rank's summary; no norms where no parameter is held whole by every rank.
    assert {"rank/0/step_time", "rank/1/step_time"} <= names
    assert "rank/1/grad_norm" not in names
    hist = get_json(f"{url}/api/v1/runs/{run_id}/histograms/names")["names"]
    assert "grad_hist/4.weight" in hist and "weight_hist/0.weight" in hist


@pytest.mark.slow
def test_tensor_parallel_and_hybrid_sharded_statistics_equal_the_unsharded_models() -> None:
    first, second = launch(2, {"TRICKSCOPE_DISABLED": "1"}, "tensor-parallel", "hybrid")
    assert first["mismatches"] == [] and first["checked"] > 400
    assert second["mismatches"] == []


@pytest.mark.slow
def test_the_merge_by_reductions_equals_the_unsharded_models() -> None:
    """Past ``REDUCE_FROM_RANKS`` ranks the merge goes by reductions: the same cases as the
    gather's (with a rank that fails, and ranks that do not watch alike) give the same
    statistics."""
    first, second = launch(2, {"TRICKSCOPE_DISABLED": "1"}, "reduce")
    assert first["mismatches"] == [] and first["checked"] > 600
    assert second["mismatches"] == []
