"""A real run against a real HTTP peer (the capture server): what the sender would send."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import trickscope
from trickscope.run import json_safe
from trickscope_wire import decode_f64, decode_i64, encode_f64


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4 * 6 * 6, 3)
        self.frozen = nn.Linear(3, 3)
        self.frozen.requires_grad_(False)
        self.unused = nn.Parameter(torch.zeros(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.conv(x)))
        return self.frozen(self.head(h.flatten(1)))


def test_watch_sends_statistics_that_match_a_per_parameter_reference(
    capture: Any, settings: dict[str, Any]
) -> None:
    torch.manual_seed(0)
    model = Net()
    optimizer = torch.optim.SGD(
        [
            {"params": [*model.conv.parameters(), *model.bn.parameters()], "lr": 0.1},
            {"params": [*model.head.parameters(), model.unused], "lr": torch.tensor(0.05)},
        ],
        momentum=0.9,
    )
    expected: dict[str, float] = {}
    with trickscope.init(project="p", url=capture.url, **settings) as run:
        run.watch(model, optimizer, every=2)
        for step in range(3):
            optimizer.zero_grad(set_to_none=True)
            model(torch.randn(4, 1, 8, 8)).pow(2).mean().backward()
            before = {n: p.detach().clone() for n, p in model.named_parameters()}
            optimizer.step()
            if step == 2:
                for name, p in model.named_parameters():
                    w = p.detach()
                    expected[f"weight_norm/{name}"] = torch.linalg.vector_norm(w).item()
                    expected[f"weight_std/{name}"] = w.std().item()
                    if p.grad is not None:
                        g = p.grad
                        expected[f"grad_norm/{name}"] = torch.linalg.vector_norm(g).item()
                        expected[f"grad_mean/{name}"] = g.mean().item()
                        expected[f"grad_max/{name}"] = g.abs().max().item()
                        delta = torch.linalg.vector_norm(w - before[name])
                        expected[f"update_ratio/{name}"] = (
                            delta / torch.linalg.vector_norm(before[name])
                        ).item()
            run.log({"loss": torch.tensor(float(step)), "acc/ema": 0.5})
    assert run.incidents.errors == 0
    points = capture.captured.points()
    for key, value in expected.items():
        assert points[key][2] == pytest.approx(value, rel=1e-4, abs=1e-7), key
    assert set(points["grad_norm/conv.weight"]) == {0, 2}  # every=2
    assert "grad_norm/unused" not in points  # no gradient: missing, not zero
    assert "grad_norm/frozen.weight" not in points
    assert "weight_norm/frozen.weight" in points
    assert points["lr/group0"][2] == pytest.approx(0.1)
    assert points["lr/group1"][2] == pytest.approx(0.05)
    assert "grad_norm/total" in points
    assert points["loss"] == {0: 0.0, 1: 1.0, 2: 2.0}  # log follows the optimizer step
    assert points["acc/ema"][1] == 0.5


def test_requests_arrive_in_order(capture: Any, settings: dict[str, Any]) -> None:
    model = nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    run = trickscope.init(project="p", url=capture.url, config={"lr": 1e-3}, tags=["a"], **settings)
    run.watch(model, optimizer, every=1)
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    run.finish()
    requests = capture.captured.snapshot()
    paths = [(method, path.removeprefix(f"/api/v1/runs/{run.id}")) for method, path, _ in requests]
    # The run's creation comes first and its finish last; control requests keep their order.
    # Logged scalars bypass the inbox (packed columns), so a points batch may precede a later
    # metadata request: the server takes points for any run that exists.
    assert paths[0] == ("PUT", "")
    assert paths[-1] == ("POST", "/finish")
    control = [p for p in paths[1:-1] if p != ("POST", "/points")]
    assert control == [("PUT", "/layers"), ("PUT", "/setup")]
    assert paths.count(("POST", "/points")) >= 1
    create = requests[0][2]
    assert create["project"] == "p" and create["config"] == {"lr": 1e-3}
    assert create["tags"] == ["a"] and "torch" in create["system"]
    (layers,) = [body for _, path, body in requests if path.endswith("/layers")]
    assert layers["layers"] == ["weight", "bias"]
    assert requests[-1][2]["status"] == "finished"
    assert run.url == f"{capture.url}/runs/{run.id}"
    batches = [body["batch_id"] for _, path, body in requests if path.endswith("/points")]
    assert len(set(batches)) == len(batches) == paths.count(("POST", "/points"))


def test_context_manager_marks_a_run_failed_on_exception(
    capture: Any, settings: dict[str, Any]
) -> None:
    with pytest.raises(RuntimeError):
        with trickscope.init(project="p", url=capture.url, **settings):
            raise RuntimeError("boom")
    assert capture.captured.snapshot()[-1][2]["status"] == "failed"


def test_nan_and_inf_survive_to_the_wire(
    capture: Any, settings: dict[str, Any], wait_for: Callable[..., None]
) -> None:
    assert list(decode_f64(encode_f64([math.nan, math.inf, -math.inf, -0.0])))[1:] == [
        math.inf,
        -math.inf,
        -0.0,
    ]
    model = nn.Linear(3, 1, bias=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with trickscope.init(project="p", url=capture.url, **settings) as run:
        run.watch(model, optimizer, every=1)
        model.weight.grad = torch.tensor([[math.nan, math.inf, -math.inf]])
        optimizer.step()
        run.log({"loss": torch.tensor(math.inf), "x": math.nan})
    points = capture.captured.points()
    assert points["grad_nan/weight"][0] == 1.0
    assert points["grad_inf/weight"][0] == 2.0
    assert math.isnan(points["grad_norm/weight"][0])
    assert points["loss"][0] == math.inf
    assert math.isnan(points["x"][0])


@pytest.mark.parametrize("compress", [True, None])
def test_large_batches_are_gzipped_when_asked_and_still_decoded(
    capture: Any, settings: dict[str, Any], compress: bool | None
) -> None:
    """Compressed on request; by default not to a server on loopback (CPU for nothing)."""
    with trickscope.init(
        project="p", url=capture.url, queue_size=4096, compress=compress, **settings
    ) as run:
        for step in range(2000):
            run.log({f"m{i}": float(i) for i in range(5)}, step=step)
    assert len(capture.captured.points()["m4"]) == 2000
    assert (capture.captured.gzipped >= 1) == bool(compress)
    assert run.incidents.thinned == 0


def test_a_full_queue_thins_only_layer_statistics_and_counts_them(
    capture: Any, settings: dict[str, Any]
) -> None:
    """With room for one waiting sample, logged values (numbers and tensors) all arrive; only
    watch's per-layer statistics are thinned, and the count is a series of its own."""
    model = nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with trickscope.init(project="p", url=capture.url, queue_size=1, **settings) as run:
        run.watch(model, optimizer, every=1, hist_every=1)
        for step in range(300):
            optimizer.zero_grad()
            loss = model(torch.randn(8, 4)).square().mean()
            loss.backward()
            optimizer.step()
            run.log({"m": float(step), "loss": loss.detach()}, step=step)
    points = capture.captured.points()
    assert points["m"] == {step: float(step) for step in range(300)}
    assert sorted(points["loss"]) == list(range(300))
    assert sorted(points["lr/group0"]) == list(range(300))  # host values of thinned steps too
    assert run.incidents.thinned > 0 and run.incidents.errors == 0
    assert max(points["agent/thinned_samples"].values()) == run.incidents.thinned
    assert len(points["grad_norm/weight"]) < 300


def test_setup_mistakes_raise_at_once(capture: Any, settings: dict[str, Any]) -> None:
    run = trickscope.init(project="p", url=capture.url, **settings)
    model = nn.Linear(1, 1)
    with pytest.raises(TypeError, match="torch.nn.Module, got str"):
        run.watch("not a model", torch.optim.SGD(model.parameters()))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="torch.optim.Optimizer"):
        run.watch(model, "sgd")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="every must be an int >= 1, got 0"):
        run.watch(model, torch.optim.SGD(model.parameters()), every=0)
    with pytest.raises(ValueError, match="scratch_bytes must be an int >= 1, got 0"):
        run.watch(model, torch.optim.SGD(model.parameters()), scratch_bytes=0)
    with pytest.raises(ValueError, match="update_sample must be an int >= 1, got 0"):
        run.watch(model, torch.optim.SGD(model.parameters()), update_sample=0)
    with pytest.raises(ValueError, match="project=''"):
        trickscope.init(project="", url=capture.url, **settings)
    run.finish()


def test_bad_log_values_are_counted_not_raised(capture: Any, settings: dict[str, Any]) -> None:
    with trickscope.init(project="p", url=capture.url, **settings) as run:
        run.log({"v": torch.ones(3)})
        run.log({"s": "text"})  # type: ignore[dict-item]
    assert run.incidents.errors == 2


def test_wide_dicts_of_numbers_tensors_and_mixed_values(
    capture: Any, settings: dict[str, Any]
) -> None:
    """Numbers go in as one row, tensors stacked, a mixed dict key by key; a dict holding a
    value log cannot take is counted and none of its values is kept, as for a narrow one."""
    keys = [f"k{i}" for i in range(12)]
    with trickscope.init(project="p", url=capture.url, **settings) as run:
        run.log({key: i for i, key in enumerate(keys)}, step=0)
        run.log({key: torch.tensor(i + 0.5, requires_grad=True) for i, key in enumerate(keys)}, 1)
        run.log({key: torch.tensor(i) if i % 2 else float(i) for i, key in enumerate(keys)}, 2)
        run.log({**dict.fromkeys(keys, 1.0), "k3": "text"}, step=3)  # type: ignore[dict-item]
        run.log({key: torch.ones(2 if key == "k3" else ()) for key in keys}, step=4)
        run.log({key: 2**1100 if key == "k3" else 1 for key in keys}, step=5)
        run.log({key: -float(i) for i, key in enumerate(reversed(keys))}, step=6)  # new order
        run.log({key: np.float64(i) if i else True for i, key in enumerate(keys)}, step=7)
    points = capture.captured.points()
    assert points["k5"] == {0: 5.0, 1: 5.5, 2: 5.0, 6: -6.0, 7: 5.0}
    assert points["k0"] == {0: 0.0, 1: 0.5, 2: 0.0, 6: -11.0, 7: 1.0}
    assert run.incidents.errors == 3


def test_config_is_made_json_safe() -> None:
    from pathlib import Path

    safe = json_safe({"t": torch.tensor(1.0), "p": Path("/x"), "f": math.nan, 1: (2, math.inf)})
    assert safe == {"t": "tensor(1.)", "p": "/x", "f": "NaN", "1": [2, "Infinity"]}


def test_logged_points_go_out_at_once_and_layer_statistics_in_rarer_batches(
    capture: Any, settings: dict[str, Any], wait_for: Callable[..., None]
) -> None:
    model = nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    run = trickscope.init(project="p", url=capture.url, **settings, stats_flush_secs=60.0)
    run.watch(model, optimizer, every=1, hist_every=1)
    for step in range(3):
        optimizer.zero_grad()
        model(torch.randn(8, 4)).sum().backward()
        optimizer.step()
        run.log({"loss": float(step), "loss/tensor": torch.tensor(step * 2.0)}, step=step)
    wait_for(lambda: len(capture.captured.points().get("loss", {})) == 3)
    # Logged tensors (copied from the device like the statistics) go out at once too.
    wait_for(lambda: len(capture.captured.points().get("loss/tensor", {})) == 3)
    # The learning rate and the per-step check's totals ride with the logged points; the
    # per-layer series wait.
    points = capture.captured.points()
    assert points["loss/tensor"] == {0: 0.0, 1: 2.0, 2: 4.0}
    assert points["lr/group0"] == {0: 0.1, 1: 0.1, 2: 0.1}
    per_layer = [
        name
        for name in points
        if name.startswith(("grad_norm", "weight_norm")) and not name.startswith("grad_norm/total")
    ]
    assert per_layer == []
    run.finish()
    points = capture.captured.points()
    assert set(points["grad_norm/weight"]) == {0, 1, 2}
    assert set(points["update_ratio/bias"]) == {0, 1, 2}
    assert set(capture.captured.histograms()["grad_hist/weight"]) == {0, 1, 2}


def test_statistics_of_a_layer_whose_gradient_comes_and_goes_arrive_whole(
    capture: Any, settings: dict[str, Any]
) -> None:
    """Two layouts in one bulk batch (the branch has a gradient on even steps only): each
    series is sent once, with every step of both."""
    trunk, branch = nn.Linear(4, 4), nn.Linear(4, 1)
    model = nn.ModuleDict({"trunk": trunk, "branch": branch})
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    run = trickscope.init(project="p", url=capture.url, **settings, stats_flush_secs=60.0)
    run.watch(model, optimizer, every=1, hist_every=0)
    for step in range(6):
        optimizer.zero_grad(set_to_none=True)
        out = trunk(torch.randn(8, 4))
        (branch(out) if step % 2 == 0 else out).sum().backward()
        optimizer.step()
    run.finish()
    points = capture.captured.points()
    assert set(points["weight_norm/trunk.weight"]) == set(range(6))
    assert set(points["weight_norm/branch.weight"]) == set(range(6))
    assert set(points["grad_norm/branch.weight"]) == {0, 2, 4}
    assert set(points["grad_norm/trunk.weight"]) == set(range(6))
    batches = [body for _, path, body in capture.captured.snapshot() if path.endswith("/points")]
    assert batches
    for body in batches:  # no series twice in one batch
        in_batch = [series["name"] for series in body["series"]]
        assert len(in_batch) == len(set(in_batch))
    # Series of both layouts still go as blocks, in step order (the server stores them as one).
    blocks = [block for body in batches for block in body.get("blocks", [])]
    (weights,) = [block for block in blocks if block["family"] == "weight_norm"]
    assert {"trunk.weight", "branch.weight"} <= set(weights["layers"])
    assert list(decode_i64(weights["steps"])) == list(range(6))
    for block in blocks:
        steps = list(decode_i64(block["steps"]))
        assert steps == sorted(set(steps)), block["family"]


def test_a_control_request_mid_run_does_not_send_the_held_points_early(
    capture: Any, settings: dict[str, Any]
) -> None:
    """A config update (like a setup or a finding) goes ahead of the points held for the next
    flush, which then make one request; ``finish`` goes after everything logged before it."""
    slow = {**settings, "flush_secs": 60.0, "stats_flush_secs": 60.0}
    run = trickscope.init(project="p", url=capture.url, **slow)
    run.log({"loss": 1.0}, step=0)
    time.sleep(0.2)  # the sender has woken for nothing since (its longest sleep is 0.5 s)
    run.update_config({"lr": 0.1})
    time.sleep(0.6)  # and has certainly handled the update
    run.log({"loss": 0.5}, step=1)
    run.finish()
    requests = [(method, path) for method, path, _ in capture.captured.snapshot()]
    points = [i for i, (_, path) in enumerate(requests) if path.endswith("/points")]
    (finish,) = [i for i, (_, path) in enumerate(requests) if path.endswith("/finish")]
    assert len(points) == 1 and points[0] < finish
    assert requests.count(("PUT", f"/api/v1/runs/{run.id}")) == 2  # created, then updated
    assert capture.captured.points()["loss"] == {0: 1.0, 1: 0.5}


def test_statistics_and_logged_points_of_one_flush_go_in_one_request(
    capture: Any, settings: dict[str, Any]
) -> None:
    """Both carry ``grad_norm/total`` (due steps from the statistics, the others from the
    per-step check): joined into one series, they still make one request, with every step of
    the total once and in order."""
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    slow = {**settings, "flush_secs": 60.0, "stats_flush_secs": 60.0}  # all goes at finish
    run = trickscope.init(project="p", url=capture.url, **slow)
    run.watch(model, optimizer, every=2, hist_every=0)
    for step in range(6):
        optimizer.zero_grad(set_to_none=True)
        loss = model(torch.randn(8, 4)).pow(2).mean()
        loss.backward()
        optimizer.step()
        run.log({"loss": loss.detach()}, step=step)
    run.finish()
    batches = [body for _, path, body in capture.captured.snapshot() if path.endswith("/points")]
    (batch,) = batches
    assert {block["family"] for block in batch["blocks"]} >= {"grad_norm", "weight_norm"}
    names = [series["name"] for series in batch["series"]]
    assert len(names) == len(set(names))
    (total,) = [series for series in batch["series"] if series["name"] == "grad_norm/total"]
    assert list(decode_i64(total["steps"])) == list(range(6))
    assert all(math.isfinite(v) and v > 0 for v in decode_f64(total["values"]))
    points = capture.captured.points()
    assert set(points["loss"]) == set(range(6))
    assert set(points["grad_norm/0.weight"]) == {0, 2, 4}
