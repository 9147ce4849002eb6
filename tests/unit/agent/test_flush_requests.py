"""One flush's logged points and watch's statistics share a request, a series in both joined
into one that keeps the order it was logged in; statistics past the point cap go before their
flush interval."""

from __future__ import annotations

import base64
from typing import Any

import pytest
import torch
from torch import nn

import trickscope
from tests.helpers import wait_until
from trickscope_wire import MATRIX_BLOCKS_WIRE_VERSION, decode_f64, decode_i64


def _points_requests(capture: Any) -> list[dict[str, Any]]:
    return [body for method, path, body in capture.captured.snapshot() if path.endswith("/points")]


def _watched_run(
    capture: Any, settings: dict[str, Any], *, hist_every: int
) -> tuple[trickscope.Run, nn.Module, torch.optim.Optimizer]:
    """A run that flushes only at its end, watching a small model at every step."""
    model = nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    settings.update(flush_secs=60.0, stats_flush_secs=60.0)
    run = trickscope.init(project="p", url=capture.url, **settings)
    run.watch(model, optimizer, every=1, hist_every=hist_every)
    return run, model, optimizer


def _train(
    run: trickscope.Run, model: nn.Module, optimizer: torch.optim.Optimizer, capture: Any
) -> None:
    # watch's control requests flush what waits when handled: let that be before training
    snapshot = capture.captured.snapshot
    wait_until(lambda: any(path.endswith("/setup") for _, path, _ in snapshot()), what="setup")
    for step in range(3):
        optimizer.zero_grad()
        model(torch.randn(8, 4)).sum().backward()
        optimizer.step()
        run.log({"loss": float(step)}, step=step)


def test_a_series_both_watched_and_logged_is_joined_in_one_request_and_keeps_its_order(
    capture: Any, settings: dict[str, Any]
) -> None:
    run, model, optimizer = _watched_run(capture, settings, hist_every=0)
    _train(run, model, optimizer, capture)
    run.log({"grad_norm/weight": 99.0}, step=1)  # logged after watch's value of step 1
    run.finish()
    (request,) = _points_requests(capture)
    assert request["blocks"] and any(s["name"] == "loss" for s in request["series"])
    (joined,) = [s for s in request["series"] if s["name"] == "grad_norm/weight"]
    steps = list(decode_i64(joined["steps"]))
    assert steps == [0, 1, 1, 2]  # watch's step 1, then the logged one: the later wins
    assert list(decode_f64(joined["values"]))[2] == 99.0
    points = capture.captured.points()
    assert points["grad_norm/weight"][1] == 99.0 and set(points["grad_norm/weight"]) == {0, 1, 2}
    assert points["loss"] == {0: 0.0, 1: 1.0, 2: 2.0}


def test_a_flush_of_logged_points_and_statistics_is_one_request(
    capture: Any, settings: dict[str, Any]
) -> None:
    run, model, optimizer = _watched_run(capture, settings, hist_every=1)
    _train(run, model, optimizer, capture)
    run.finish()
    (request,) = _points_requests(capture)
    assert request["blocks"] and request["histogram_blocks"]
    assert request["wire_version"] == MATRIX_BLOCKS_WIRE_VERSION  # with histogram blocks too
    points = capture.captured.points()
    assert points["loss"] == {0: 0.0, 1: 1.0, 2: 2.0}
    assert set(points["update_ratio/weight"]) == {0, 1, 2}


def _block_points(request: dict[str, Any]) -> int:
    """Statistic values a points request carries in its blocks (layers x steps each)."""
    return sum(len(b["layers"]) * len(base64.b64decode(b["steps"])) // 8 for b in request["blocks"])


def test_statistics_past_the_point_cap_go_before_their_flush_interval(
    capture: Any, settings: dict[str, Any], monkeypatch: Any
) -> None:
    """A wide model at a high step rate: watch's statistics go once ``FLUSH_POINTS`` of them
    wait, long before ``stats_flush_secs``, and a request holds the cap and one step at most."""
    cap = 60
    monkeypatch.setattr(trickscope.sender, "FLUSH_POINTS", cap)
    run, model, optimizer = _watched_run(capture, settings, hist_every=0)
    _train(run, model, optimizer, capture)  # steps 0-2
    for _ in range(9):
        optimizer.zero_grad()
        model(torch.randn(8, 4)).sum().backward()
        optimizer.step()
    # Within the minute of both flush intervals: only the cap can have sent them.
    wait_until(lambda: any(r["blocks"] for r in _points_requests(capture)), what="a block batch")
    run.finish()
    batches = [r for r in _points_requests(capture) if r["blocks"]]
    per_step = sum(len(b["layers"]) for b in batches[0]["blocks"])  # every statistic is due
    sizes = [_block_points(r) for r in batches]
    assert len(sizes) >= 2 and max(sizes) < cap + per_step, (sizes, per_step)


@pytest.mark.parametrize(("ride_along", "requests"), [(50_000, 1), (10, 2)])
def test_a_full_statistics_batch_takes_a_few_logged_points_along_and_not_many(
    capture: Any, settings: dict[str, Any], monkeypatch: Any, ride_along: int, requests: int
) -> None:
    """Statistics that fill a request on their own (at a GPU's pace they reach the cap before
    the flush interval) still carry the flush's few logged points, which would otherwise cost
    a request of their own; past ``RIDE_ALONG_POINTS`` logged points go apart, the statistics
    first."""
    # The flush holds 72 statistic values and 18 logged points (the loss, watch's scalars): a
    # request's 50 points are under the statistics alone, over the logged points alone.
    monkeypatch.setattr(trickscope.sender, "LOG_BATCH_POINTS", 50)
    monkeypatch.setattr(trickscope.sender, "RIDE_ALONG_POINTS", ride_along)
    run, model, optimizer = _watched_run(capture, settings, hist_every=0)
    _train(run, model, optimizer, capture)
    run.finish()
    sent = _points_requests(capture)
    assert len(sent) == requests, [sorted(r) for r in sent]
    assert sent[0]["blocks"]  # the statistics first
    assert capture.captured.points()["loss"] == {0: 0.0, 1: 1.0, 2: 2.0}
