"""The agent's benchmarks run end to end here: bench/gpu_check.py in its CPU smoke mode (the GPU
run needs CUDA), bench/host_ops.py (no GPU needed), bench/sender.py, one short round of
bench/agent_overhead.py, a short bench/log_throughput.py, bench/ingest.py's agent mode,
bench/probe_hooks.py and bench/request_warmth.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.timeout(600)
def test_gpu_check_dry_run_builds_every_model_and_prints_one_table_on_cpu() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--dry-run"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line.split("|")[1:-1] for line in result.stdout.splitlines() if line.startswith("| ")]
    header, by_model = rows[0], {cells[0].strip(): cells for cells in rows[1:]}
    assert set(by_model) == {"model", "resnet50", "vit_b_16", "llama_1b", "fsdp2 x2"} - {"model"}
    column = {name.strip(): index for index, name in enumerate(header)}
    for model in ("resnet50", "vit_b_16", "llama_1b"):
        cells = [cell.strip() for cell in by_model[model]]
        assert cells[column["errors"]] == "none", cells
        assert cells[column["host syncs"]] == "0", cells
        assert "OVER" not in cells[column["target"]], cells
    assert "needs two GPUs" in by_model["fsdp2 x2"][1]
    assert (ROOT / "bench" / "gpu_check.sh").stat().st_mode & 0o111  # the one command


def test_host_ops_bench_counts_the_launches_of_a_due_step() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "host_ops.py"), "--repeats", "5"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line.split("|")[1:-1] for line in result.stdout.splitlines() if line.startswith("| ")]
    keyed = {(cells[0].strip(), cells[2].strip()): cells for cells in rows[1:]}
    launches = {key: int(cells[-2]) for key, cells in keyed.items()}
    host_ms = {key: float(cells[-1].split()[0]) for key, cells in keyed.items()}
    for model in ("resnet50", "vit_b_16"):
        assert 0 < host_ms[(model, "row kernels")] < host_ms[(model, "torch ops")], host_ms
        # The fused path: a copy, two kernels per statistic family, the result's assembly.
        assert launches[(model, "row kernels")] <= 15, launches
        assert launches[(model, "torch ops")] > 4 * launches[(model, "row kernels")], launches


def test_sender_bench_measures_the_sender_thread() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "sender.py"), "--steps", "40", "--repeats", "1"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| vit_b_16 ")]
    assert len(rows) == 1 and float(rows[0].split("|")[3].split()[0]) > 0, result.stdout


@pytest.mark.slow  # 13 s; the data path's own tests check a tight loop loses nothing
def test_log_throughput_bench_stores_every_point_it_logs() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "log_throughput.py"), "--points", "20000"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    (row,) = [line for line in result.stdout.splitlines() if line.startswith("| trickscope ")]
    cells = [cell.strip() for cell in row.split("|")[1:-1]]
    assert float(cells[1]) > 0 and cells[-1] == "20,000 / 20,000", row


def test_late_steps_bench_measures_a_late_batch_both_ways() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "late_steps.py"), "--sizes", "20", "60"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    rows = [line.split("|")[1:-1] for line in lines if line[:3] in ("| 1", "| 2")]
    assert [row[0].strip() for row in rows] == ["1,080", "2,160"], result.stdout
    for row in rows:
        assert all(float(cell.split()[0]) > 0 for cell in row[1:]), row


def test_ingest_bench_agent_mode_reads_back_every_point_it_logs() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "ingest.py"), "--agent", "--keys", "40",
         "--steps", "30", "--repeats", "1"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    (row,) = [line for line in result.stdout.splitlines() if line.startswith("| 1 |")]
    cells = [cell.strip() for cell in row.split("|")[1:-1]]
    assert float(cells[2].replace(",", "")) > 0 and cells[-1] == "1,200", row


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_agent_overhead_bench_runs_a_round_against_a_real_server() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "agent_overhead.py"), "--models", "vit_tiny",
         "--variants", "plain", "trickscope_every1", "--rounds", "1", "--steps", "2",
         "--warmup", "1", "--warmup-secs", "0", "--threads", "1", "--batch", "4"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {
        cells[0]: cells[1:]
        for line in result.stdout.splitlines()
        if line.startswith("| ") and not line.startswith("| variant")
        for cells in [[cell.strip() for cell in line.split("|")[1:-1]]]
    }
    assert set(rows) == {"plain", "trickscope_every1"}, result.stdout
    assert rows["trickscope_every1"][2].endswith(")"), result.stdout  # overhead (range)
    # The server's CPU time while the steps were timed, per step: a number, not "n/a".
    assert float(rows["trickscope_every1"][3]) >= 0, result.stdout


@pytest.mark.slow
def test_diagnosis_cost_bench_times_each_part_of_the_agent() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "diagnosis_cost.py"), "--models", "vit_tiny",
         "--steps", "12", "--threads", "1"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line.split("|")[1:-1] for line in result.stdout.splitlines()]
    rows = [cells for cells in rows if cells and cells[0].strip() == "vit_tiny"]
    assert [cells[1].strip() for cells in rows] == ["1", "10"], result.stdout
    for cells in rows:
        diagnosis_ms = float(cells[4].split()[0])
        assert diagnosis_ms > 0, result.stdout  # the hooks ran and were timed


def test_probe_hooks_bench_prints_one_row_per_hook() -> None:
    bench = str(ROOT / "bench" / "probe_hooks.py")
    result = subprocess.run(
        [sys.executable, bench, "--calls", "200", "--repeats", "2"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ") and "µs" in line]
    assert len(rows) == 6, result.stdout
    assert all(float(row.split("|")[2].split()[0]) > 0 for row in rows), result.stdout


@pytest.mark.slow
def test_request_warmth_bench_prints_a_row_per_gap() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "request_warmth.py"), "--rounds", "1",
         "--requests", "5", "--steps", "3", "--gaps", "0", "0.01"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    rows = [line for line in lines if line.startswith("| ") and " ms |" in line]
    assert len(rows) == 4, result.stdout  # two gaps, in each of the two tables
    for row in rows:
        cells = [cell.strip() for cell in row.split("|")[2:-1]]
        assert all(float(cell.split("–")[0]) > 0 for cell in cells), row
