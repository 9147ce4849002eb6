"""``trickscope demo`` as a user runs it: serving itself, with every trick reporting."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.helpers import LiveServer, start_server, stop_server


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def test_demo_serves_itself_and_streams_two_runs_with_all_nine_tricks(tmp_path: Path) -> None:
    """Without --url (nor TRICKSCOPE_URL) the demo starts its own server; what it stored is then
    read by a server of the test's own on the same database file."""
    database = f"sqlite:///{tmp_path / 'demo.db'}"
    env = {key: value for key, value in os.environ.items() if key != "TRICKSCOPE_URL"}
    result = subprocess.run(
        [sys.executable, "-m", "trickscope_cli", "demo", "--epochs", "2", "--exit-when-done",
         "--db", database],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    started = re.search(r"started a server at (http://127\.0\.0\.1:\d+)/", result.stdout)
    assert started is not None, result.stdout
    assert result.stdout.count(f"trickscope: run {started.group(1)}/runs/") == 2
    live_server = start_server(database, tmp_path / "server.log")
    try:
        _check_runs(live_server)
    finally:
        stop_server(live_server)


def _check_runs(live_server: LiveServer) -> None:
    runs = get_json(f"{live_server.url}/api/v1/runs?project=digits")["runs"]
    assert sorted(r["config"]["optimizer"] for r in runs) == ["adamw", "sgd"]
    assert all(r["status"] == "finished" for r in runs)
    for run in runs:
        names = {
            s["name"]
            for s in get_json(f"{live_server.url}/api/v1/runs/{run['id']}/series")["series"]
        }
        expected = {
            "wd/group0",  # weight decay, per group
            "lr/group0",  # warmup + cosine decay
            "drop_path/rate/blocks.2.drop_path",  # DropPath, configured
            "drop_path/realised/blocks.2.drop_path",  # ... and realised
            "ema/decay",  # EMA of the weights
            "ema/distance",
            "eval/acc_raw",  # EMA vs raw on the same batches
            "eval/acc_ema",
            "accum/effective_batch",  # gradient accumulation
            "clip/pre_norm",  # gradient clipping
            "clip/clipped",
            "grad_norm/stem.0.weight",  # per-layer inspection
            "update_ratio/head.4.weight",
        }
        optimizer = {"adamw": "opt/beta2/group0", "sgd": "opt/momentum/group0"}
        expected.add(optimizer[run["config"]["optimizer"]])  # AdamW betas / SGD momentum
        assert expected <= names, expected - names
        assert set(run["config"]["tricks"]) >= {"schedule", "ema", "drop_path", "accumulation"}
        assert run["latest"]["eval/acc_ema"] > 0.5
        health = get_json(f"{live_server.url}/api/v1/runs/{run['id']}/health")
        ran = {c["id"] for c in health["checks"] if c["status"] == "ran"}
        assert {"nonfinite", "loss", "ema", "drop-path", "accumulation"} <= ran
        assert [f["check"] for f in health["findings"] if f["severity"] == "error"] == []
