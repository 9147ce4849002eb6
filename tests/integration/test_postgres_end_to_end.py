"""A server process on PostgreSQL end to end: the agent trains and logs through it, the REST API
reads back exactly what was logged (NaN and ±Inf included, a step logged again read once with
its later value) and the health check names the non-finite loss."""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

import trickscope
from tests.helpers import LiveServer, postgres_url, start_server, stop_server, wait_until
from tests.unit.server.conftest import _pg_schema_url

pytestmark = pytest.mark.postgres

STEPS = 30
SPECIAL = {7: math.nan, 8: math.inf, 9: -math.inf}


@pytest.fixture
def pg_server(tmp_path: Path) -> Iterator[LiveServer]:
    urls = _pg_schema_url(postgres_url() or "")
    server = start_server(next(urls), tmp_path / "server.log")
    try:
        yield server
    finally:
        stop_server(server)
        next(urls, None)  # drops the schema


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def _loss(server: LiveServer, run_id: str) -> dict[int, object]:
    body = get_json(f"{server.url}/api/v1/runs/{run_id}/points?name=loss/train")
    return dict(zip(body["step"], body["value"], strict=True))


def _stored_steps(server: LiveServer, run_id: str) -> set[int]:
    """The steps of ``loss/train`` stored so far; none before its first batch (a 404)."""
    try:
        return set(_loss(server, run_id))
    except urllib.error.HTTPError as exc:
        if exc.code != 404:
            raise
        return set()


def test_an_agent_run_on_postgresql_reads_back_exactly(
    pg_server: LiveServer, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(32, 8), torch.randint(0, 2, (32,))
    logged: dict[int, float] = {}
    with trickscope.init(
        project="pg", url=pg_server.url, journal_dir=tmp_path / "journal", flush_secs=0.02
    ) as run:
        run.watch(model, optimizer, every=1)
        for step in range(STEPS):
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            value = SPECIAL.get(step, float(loss.detach()))
            logged[step] = value
            run.log({"loss/train": value}, step=step)
            if step == 20:  # step 20 again, in the very next batch: the later write wins
                wait_until(lambda: 20 in _stored_steps(pg_server, run.id), what="step 20 stored")
                logged[step] = 0.125
                run.log({"loss/train": 0.125}, step=step)

    stored = _loss(pg_server, run.id)
    assert list(stored) == list(range(STEPS))
    for step, value in logged.items():
        if math.isnan(value):
            assert stored[step] == "NaN"
        elif math.isinf(value):
            assert stored[step] == ("Infinity" if value > 0 else "-Infinity")
        else:
            assert stored[step] == value  # float64 both ways: bit for bit
    summary = get_json(f"{pg_server.url}/api/v1/runs/{run.id}")
    assert summary["status"] == "finished"
    heatmap = get_json(f"{pg_server.url}/api/v1/runs/{run.id}/heatmap?stat=grad_norm")
    assert heatmap["layers"] == [name for name, _ in model.named_parameters()]
    assert len(heatmap["step"]) == STEPS
    health = get_json(f"{pg_server.url}/api/v1/runs/{run.id}/health")
    found = {(f["check"], f["step"]) for f in health["findings"]}
    assert ("nonfinite-loss", 7) in found
