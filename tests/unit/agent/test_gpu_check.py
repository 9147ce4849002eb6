"""bench/gpu_check.py runs end to end on CPU in its smoke mode (the GPU run needs CUDA)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.timeout(600)
def test_gpu_check_smoke_mode_runs_on_cpu() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--device", "cpu", "--steps", "3",
         "--rounds", "1", "--small"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("| resnet50 |") and "none" in line for line in lines), lines
    assert any(line.startswith("| vit_b_16 |") and "none" in line for line in lines), lines
