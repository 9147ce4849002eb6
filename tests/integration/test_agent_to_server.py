"""The whole path: the real agent in a real CPU training loop → a real server → the REST API."""

from __future__ import annotations

import json
import math
import urllib.request

import pytest
import torch
from torch import nn

import trickscope
from tests.helpers import LiveServer, start_server, stop_server, wait_until


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def train_tiny(run: trickscope.Run, steps: int, nan_at: int | None = None) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    run.watch(model, optimizer, every=1)
    x, y = torch.randn(64, 8), torch.randint(0, 2, (64,))
    for step in range(steps):
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        logged = loss.detach()
        if step == nan_at:
            logged = torch.tensor(float("nan"))
        run.log(
            {"loss/train": logged, "marker/inf": float("inf") if step == 3 else step}, step=step
        )


def run_points(server: LiveServer, run_id: str, name: str) -> dict:
    return get_json(f"{server.url}/api/v1/runs/{run_id}/points?name={name}")


def test_training_run_streams_and_reads_back(live_server: LiveServer) -> None:
    steps = 40
    with trickscope.init(
        project="itest",
        name="tiny",
        url=live_server.url,
        config={"lr": 0.1, "nested": {"depth": 2}},
    ) as run:
        train_tiny(run, steps, nan_at=7)

    runs = get_json(f"{live_server.url}/api/v1/runs?project=itest")["runs"]
    assert [r["id"] for r in runs] == [run.id]
    assert runs[0]["status"] == "finished"
    assert runs[0]["config"]["nested"] == {"depth": 2}

    names = {
        s["name"] for s in get_json(f"{live_server.url}/api/v1/runs/{run.id}/series")["series"]
    }
    assert {
        "loss/train",
        "lr/group0",
        "grad_norm/total",
        "grad_norm/0.weight",
        "weight_norm/2.bias",
    } <= names

    loss = run_points(live_server, run.id, "loss/train")
    assert loss["step"] == list(range(steps))
    assert loss["value"][7] == "NaN"
    assert all(
        isinstance(v, float) and math.isfinite(v) for i, v in enumerate(loss["value"]) if i != 7
    )
    marker = run_points(live_server, run.id, "marker/inf")
    assert marker["value"][3] == "Infinity"

    lr = run_points(live_server, run.id, "lr/group0")
    assert lr["value"] == pytest.approx([0.1] * steps)

    heatmap = get_json(f"{live_server.url}/api/v1/runs/{run.id}/heatmap?stat=grad_norm")
    assert heatmap["layers"] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert len(heatmap["step"]) == steps


def test_large_config_and_many_layers_arrive_gzipped(live_server: LiveServer) -> None:
    """Control requests over the agent's gzip threshold (a wide model, a big config) land too."""
    depth = 60  # 120 parameter tensors: the layer list is well over the 4 KiB threshold
    model = nn.Sequential(*(nn.Linear(4, 4) for _ in range(depth)))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    config = {f"option_{i}": "a fairly long configuration value " * 2 for i in range(100)}
    with trickscope.init(project="itest", name="wide", url=live_server.url, config=config) as run:
        run.watch(model, optimizer, every=1)
        for _ in range(3):
            loss = model(torch.randn(8, 4)).square().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    assert run.incidents.errors == 0
    stored = get_json(f"{live_server.url}/api/v1/runs/{run.id}")
    assert stored["config"] == config
    assert stored["layers"] == [name for name, _ in model.named_parameters()]


def test_agent_buffers_while_server_down_and_delivers_after_restart(tmp_path) -> None:
    """The training loop never waits on the network; what was logged arrives once it is back."""
    database_url = f"sqlite:///{tmp_path / 'ts.db'}"
    server = start_server(database_url, tmp_path / "first.log")
    url = server.url
    run = trickscope.init(project="outage", url=url)
    run.log({"loss": 1.0}, step=0)
    wait_until(lambda: run_points_or_none(server, run.id, "loss"), what="first point")
    stop_server(server)

    for step in range(1, 50):  # the server is down: log must return at once
        run.log({"loss": float(step)}, step=step)

    port = int(url.rsplit(":", 1)[1])
    restarted = start_server(database_url, tmp_path / "second.log", port=port)
    try:
        run.finish(timeout=30)
        points = run_points(restarted, run.id, "loss")
        assert points["step"] == list(range(50))
    finally:
        stop_server(restarted)


def run_points_or_none(server: LiveServer, run_id: str, name: str) -> dict | None:
    try:
        return run_points(server, run_id, name)
    except OSError:
        return None
