"""``trickscope demo`` as a user runs it: against a server, with every trick reporting."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

from tests.helpers import LiveServer


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def test_demo_streams_two_runs_with_all_nine_tricks(live_server: LiveServer) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trickscope_cli", "demo", "--url", live_server.url, "--epochs", "2"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("trickscope: run http://") == 2

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
