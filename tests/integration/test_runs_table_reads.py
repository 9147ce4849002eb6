"""What the runs table reads, from runs the real agent trained: the last step and the series'
min/max in the listing, and the main metric's sparkline of a page of runs in one request."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request

import torch
from torch import nn

import trickscope
from tests.helpers import LiveServer


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def train(server: LiveServer, name: str, lr: float, steps: int) -> tuple[str, list[float]]:
    """A tiny CPU model trained with the agent watching; returns the run id and its losses."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    x, y = torch.randn(64, 8), torch.randint(0, 2, (64,))
    losses = []
    with trickscope.init(project="table", name=name, url=server.url, config={"lr": lr}) as run:
        run.watch(model, optimizer, every=1)
        for step in range(steps):
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            run.log({"loss/train": loss.detach()}, step=step)
    return run.id, losses


def test_listing_and_sparklines_of_agent_runs(live_server: LiveServer) -> None:
    fast, fast_losses = train(live_server, "fast", 0.5, 60)
    slow, slow_losses = train(live_server, "slow", 0.01, 30)
    listed = {r["id"]: r for r in get_json(f"{live_server.url}/api/v1/runs?project=table")["runs"]}
    # Run-level series only: the per-layer statistics the agent sends are left out.
    assert listed[fast]["last_step"] == 59
    assert listed[slow]["last_step"] == 29
    assert listed[fast]["summary"]["loss/train"]["min"] == min(fast_losses)
    assert listed[fast]["summary"]["loss/train"]["max"] == max(fast_losses)
    assert not any("/0." in name or ".weight" in name for name in listed[fast]["summary"])

    query = urllib.parse.urlencode(
        [("runs", f"{fast},{slow}"), ("name", "train/loss"), ("name", "loss/train"), ("points", 10)]
    )
    answer = get_json(f"{live_server.url}/api/v1/sparklines?{query}")
    lines = {line["run_id"]: line for line in answer["runs"]}
    assert lines[fast]["name"] == "loss/train" and lines[fast]["total"] == 60
    assert len(lines[fast]["step"]) <= 10
    assert lines[fast]["step"][0] == 0 and lines[fast]["step"][-1] == 59
    # The extremes survive the thinning: a spike is never smoothed away in the table.
    assert max(lines[fast]["value"]) == max(fast_losses)
    assert min(lines[fast]["value"]) == min(fast_losses)
    assert lines[slow]["total"] == 30
