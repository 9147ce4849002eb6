"""``trickscope import tensorboard``: event files written by ``torch.utils.tensorboard`` reach a
live server as runs whose points equal what was written, once however often they are imported."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from torch.utils.tensorboard import SummaryWriter

from tests.helpers import LiveServer, start_server, stop_server

T0 = 1_700_000_000.0  # wall times written explicitly, so they can be compared exactly
SPECIAL = {7: math.nan, 8: math.inf, 9: -math.inf}


def loss_at(step: int) -> float:
    return SPECIAL.get(step, 1.0 / (step + 1))


def write_logs(logdir: Path) -> dict[str, np.ndarray]:
    """Two runs: lr0.1/seed1 (legacy scalars, two event files, histograms, hparams through
    add_hparams' own subfolder) and lr0.01/seed1 (tensor scalars, float64). Returns the
    histogrammed values by step."""
    rng = np.random.default_rng(0)
    weights = {step: rng.normal(size=500) for step in (0, 10, 20)}
    first = logdir / "lr0.1" / "seed1"
    with SummaryWriter(str(first)) as writer:
        for step in range(20):
            writer.add_scalar("loss/train", loss_at(step), step, walltime=T0 + step)
            writer.add_scalar("lr", 0.1 * 0.9**step, step, walltime=T0 + step)
        for step, values in weights.items():
            writer.add_histogram("weights/fc", values, step, bins=10, walltime=T0 + step)
            writer.add_histogram("grads/fc", values * 1e-3, step, walltime=T0 + step)
        writer.add_hparams({"lr": 0.1, "optimizer": "sgd"}, {"hp/accuracy": 0.75})
    with SummaryWriter(str(first)) as writer:  # the run resumed: a second event file
        for step in range(20, 30):
            writer.add_scalar("loss/train", loss_at(step), step, walltime=T0 + step)
    with SummaryWriter(str(logdir / "lr0.01" / "seed1")) as writer:
        for step in range(12):
            value = math.nan if step == 3 else 1e-7 * math.pi * step
            writer.add_scalar(
                "loss/train", value, step, walltime=T0 + step, new_style=True, double_precision=True
            )
    return weights


def get_json(server: LiveServer, path: str, **params: object) -> dict:
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    with urllib.request.urlopen(f"{server.url}/api/v1{path}{query}", timeout=30) as response:
        return json.loads(response.read())


def trickscope_import(
    *arguments: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "trickscope_cli", "import", "tensorboard", *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def blocked(tmp_path: Path, *packages: str) -> dict[str, str]:
    """An environment in which importing ``packages`` fails, as where they are not installed."""
    for package in packages:
        blocker = tmp_path / "blocked" / package
        blocker.mkdir(parents=True)
        (blocker / "__init__.py").write_text(f"raise ImportError('{package} is not installed')\n")
    path = os.pathsep.join(filter(None, [str(tmp_path / "blocked"), os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": path}


def cursor(server: LiveServer, run_id: str) -> int:
    return get_json(server, f"/runs/{run_id}/points", name="loss/train")["cursor"]


def as_float(value: float | str) -> float:
    return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}.get(value, value)


def same(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(
        x == y or (math.isnan(x) and math.isnan(y)) for x, y in zip(a, b, strict=True)
    )


def test_imported_points_equal_what_was_written_and_a_second_import_stores_nothing(
    live_server: LiveServer, tmp_path: Path
) -> None:
    logdir = tmp_path / "sweep"
    weights = write_logs(logdir)
    # The import runs where torch cannot be imported, as on the server's machine.
    env = blocked(tmp_path, "torch")
    result = trickscope_import(str(logdir), "--url", live_server.url, "--tag", "cifar", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr

    runs = {run["name"]: run for run in get_json(live_server, "/runs", project="sweep")["runs"]}
    assert sorted(runs) == ["lr0.01/seed1", "lr0.1/seed1"]
    first, second = runs["lr0.1/seed1"], runs["lr0.01/seed1"]
    for run in runs.values():
        assert run["status"] == "finished"
        assert run["tags"] == ["imported:tensorboard", "cifar"]
        assert f"{live_server.url}/runs/{run['id']}" in result.stdout
    assert first["config"] == {"lr": 0.1, "optimizer": "sgd"}  # from add_hparams' subfolder
    assert first["started_at"] == "2023-11-14T22:13:20+00:00"  # the first event's, T0

    # Legacy scalars are float32 on disk: what was written, rounded to float32, NaN/Inf exact.
    loss = get_json(live_server, f"/runs/{first['id']}/points", name="loss/train", wall_time="true")
    assert loss["step"] == list(range(30))  # both event files of the folder
    assert same(
        [as_float(v) for v in loss["value"]], [float(np.float32(loss_at(s))) for s in range(30)]
    )
    assert loss["wall_time"] == [T0 + s for s in range(30)]
    lr = get_json(live_server, f"/runs/{first['id']}/points", name="lr")
    assert lr["value"] == [float(np.float32(0.1 * 0.9**s)) for s in range(20)]
    accuracy = get_json(live_server, f"/runs/{first['id']}/points", name="hp/accuracy")
    assert accuracy["value"] == [0.75]
    # Tensor scalars written as float64 arrive bit for bit.
    tensor_loss = get_json(live_server, f"/runs/{second['id']}/points", name="loss/train")
    expected = [math.nan if s == 3 else 1e-7 * math.pi * s for s in range(12)]
    assert same([as_float(v) for v in tensor_loss["value"]], expected)

    # Equal-width histograms keep their bins exactly; exponential buckets keep their total.
    exact = get_json(live_server, f"/runs/{first['id']}/histograms", name="weights/fc")
    assert exact["step"] == [0, 10, 20] and exact["bins"] == 10
    for row, lo, hi, step in zip(
        exact["counts"], exact["lo"], exact["hi"], exact["step"], strict=True
    ):
        counts, edges = np.histogram(weights[step], bins=10)
        assert row == counts.astype(float).tolist()
        assert (lo, hi) == (edges[0], edges[-1])
    rebinned = get_json(live_server, f"/runs/{first['id']}/histograms", name="grads/fc")
    assert rebinned["step"] == [0, 10, 20]
    for row, lo, hi, step in zip(
        rebinned["counts"], rebinned["lo"], rebinned["hi"], rebinned["step"], strict=True
    ):
        values = weights[step] * 1e-3
        assert sum(row) == pytest.approx(values.size, rel=1e-12)
        assert lo == pytest.approx(values.min(), rel=1e-12) and hi == pytest.approx(
            values.max(), rel=1e-12
        )

    # The ingest sequence (a read's cursor) moves with every batch stored, not with a duplicate.
    cursors = {run["id"]: cursor(live_server, run["id"]) for run in runs.values()}
    before = {
        run["id"]: get_json(live_server, f"/runs/{run['id']}/series") for run in runs.values()
    }
    again = trickscope_import(str(logdir), "--url", live_server.url, "--tag", "cifar", env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    after_runs = get_json(live_server, "/runs", project="sweep")["runs"]
    assert sorted(run["id"] for run in after_runs) == sorted(before)
    for run_id, series in before.items():
        assert get_json(live_server, f"/runs/{run_id}/series") == series  # every count unchanged
        assert cursor(live_server, run_id) == cursors[run_id]  # no batch stored again
    assert (
        len(get_json(live_server, f"/runs/{first['id']}/histograms", name="weights/fc")["step"])
        == 3
    )


def test_without_the_tensorboard_package_the_import_says_how_to_install_it(tmp_path: Path) -> None:
    logdir = tmp_path / "logs"
    with SummaryWriter(str(logdir)) as writer:
        writer.add_scalar("loss", 1.0, 0)
    result = trickscope_import(str(logdir), "--dry-run", env=blocked(tmp_path, "tensorboard"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert (
        "needs the tensorboard package" in line and "pip install 'trickscope[tensorboard]'" in line
    )


def test_without_a_server_the_import_fails_with_one_line(tmp_path: Path) -> None:
    logdir = tmp_path / "logs"
    with SummaryWriter(str(logdir)) as writer:
        writer.add_scalar("loss", 1.0, 0)
    result = trickscope_import(str(logdir), "--url", "http://127.0.0.1:9")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line == (
        "trickscope import: could not reach a trickscope server at http://127.0.0.1:9: "
        "is it running?"
    )


def test_a_server_with_tokens_takes_the_import_with_a_token_and_refuses_it_without(
    tmp_path: Path,
) -> None:
    token = "import-token-" + "0" * 20
    server = start_server(f"sqlite:///{tmp_path / 'ts.db'}", tmp_path / "server.log",
                          env={"TRICKSCOPE_TOKEN": token})  # fmt: skip
    try:
        logdir = tmp_path / "logs"
        with SummaryWriter(str(logdir / "a")) as writer:
            writer.add_scalar("loss", 0.5, 3)
        refused = trickscope_import(str(logdir), "--url", server.url, env={"TRICKSCOPE_TOKEN": ""})
        assert refused.returncode == 2
        (line,) = refused.stderr.strip().splitlines()
        assert line.startswith(f"trickscope import: the server at {server.url} refused the import")
        assert "401" in line
        taken = trickscope_import(str(logdir), "--url", server.url, "--token", token)
        assert taken.returncode == 0, taken.stdout + taken.stderr
        request = urllib.request.Request(
            f"{server.url}/api/v1/runs?project=logs", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            (run,) = json.loads(response.read())["runs"]
        assert run["name"] == "a" and run["latest"] == {"loss": 0.5}
    finally:
        stop_server(server)
