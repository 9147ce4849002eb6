"""bench/server_per_step.py end to end with tiny settings: a real server, the real agent training
ViT-tiny at each step rate, one table row per rate with finite, positive numbers."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_server_per_step_bench_prints_one_row_per_step_rate_with_positive_costs() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "server_per_step.py"), "--rounds", "1",
         "--cpu-steps", "2", "--cpu-batch", "4", "--gpu-like-steps", "12",
         "--optimizer-only-steps", "30", "--idle", "0.5", "--breakdown"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    tables = result.stdout.split("\n\n")
    rows = [line.split("|")[1:-1] for line in tables[0].splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in rows[0]]
    by_rate = {cells[1].strip(): [cell.strip() for cell in cells] for cells in rows[1:]}
    assert set(by_rate) == {"cpu", "gpu-like", "optimizer-only"}, result.stdout
    column = {name: index for index, name in enumerate(header)}
    for rate, batch, steps in (
        ("cpu", "4", "2"),
        ("gpu-like", "1", "12"),
        ("optimizer-only", "1", "30"),
    ):
        cells = by_rate[rate]
        assert cells[0] == "sqlite" and cells[2] == batch and cells[3] == steps, cells
        for name in ("step (ms)", "steps/s", "requests/step", "batches/step",
                     "server CPU/step (ms)", "server CPU/request (ms)"):  # fmt: skip
            value = float(cells[column[name]])
            assert math.isfinite(value) and value > 0, (name, cells)
        # Every request is counted: at least the run's own four and one batch.
        assert float(cells[column["requests/step"]]) * int(steps) >= 5, cells
    # The breakdown names the batches the agent sent.
    assert "POST /api/v1/runs/{id}/points" in tables[1], result.stdout
