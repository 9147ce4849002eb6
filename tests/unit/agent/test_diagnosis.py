"""The default diagnosis ``watch`` sends: setup, per-step totals, probes and findings."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
import torch
from torch import nn

import trickscope
from trickscope.probes import due, loss_scale
from trickscope.tricks import DropPath


class Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 8)
        self.fc2 = nn.Linear(8, 8)
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def _bodies(capture: Any, suffix: str) -> list[dict[str, Any]]:
    return [body for _, path, body in capture.captured.snapshot() if path.endswith(suffix)]


def _train(
    run: Any,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    steps: int,
    *,
    accumulate: int = 1,
    divide: bool = True,
    clip: float | None = None,
    scheduler: Any = None,
    before_step: Any = None,
) -> None:
    loss_fn = nn.CrossEntropyLoss()
    for step in range(steps):
        optimizer.zero_grad(set_to_none=True)
        for _ in range(accumulate):
            x, y = torch.randn(16, 6), torch.randint(0, 4, (16,))
            loss = loss_fn(model(x), y)
            (loss / accumulate if divide else loss).backward()
        if clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), clip)
        if before_step is not None:
            before_step(step)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()


def test_setup_is_sent_with_the_scheduler_found_in_the_calling_frame(
    capture: Any, settings: dict[str, Any]
) -> None:
    model = Mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=20)
    with trickscope.init(project="p", url=capture.url, **settings) as run:
        run.watch(model, optimizer, every=2)
        _train(run, model, optimizer, 6, scheduler=scheduler)
    assert run.incidents.errors == 0, run.incidents.by_kind
    setups = _bodies(capture, "/setup")
    assert len(setups) == 1  # the learning rate moving is no new setup
    doc = setups[0]["setup"]
    assert doc["scheduler"]["class"] == "OneCycleLR"
    assert (doc["planned_steps"], doc["planned_steps_source"]) == (20, "scheduler")
    assert doc["optimizer"]["family"] == "sgd" and doc["every"] == 2
    assert [p["name"] for p in doc["params"]][:2] == ["fc1.weight", "fc1.bias"]
    points = capture.captured.points()
    # sched/calls is read at the step, before this step's scheduler.step().
    assert points["sched/calls"] == {s: float(s) for s in range(6)}


def test_an_ema_found_after_watch_is_described_again_and_probed(
    capture: Any, settings: dict[str, Any]
) -> None:
    model = Mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    swa = torch.optim.swa_utils
    with trickscope.init(project="p", url=capture.url, **settings) as run:
        run.watch(model, optimizer, every=2)
        ema = swa.AveragedModel(model, multi_avg_fn=swa.get_ema_multi_avg_fn(0.9))
        for _ in range(5):
            _train(run, model, optimizer, 1)
            ema.update_parameters(model)
    assert run.incidents.errors == 0, run.incidents.by_kind
    setups = [body["setup"] for body in _bodies(capture, "/setup")]
    assert setups[0]["ema"] is None
    assert setups[-1]["ema"] == {"class": "AveragedModel", "decay": 0.9, "decay_source": "closure"}
    points = capture.captured.points()
    # Found after step 0's update: probed from step 2 on (due steps 2, 4).
    assert set(points["ema/distance"]) == {2, 4}
    assert points["ema/updates"] == {2: 2.0, 4: 4.0}  # n_averaged before that step's update
    assert points["ema/decay"] == {2: 0.9, 4: 0.9}
    assert all(value > 0 for value in points["ema/norm"].values())


def test_clipping_is_measured_and_the_preclip_norm_recovered(
    capture: Any, settings: dict[str, Any]
) -> None:
    torch.manual_seed(0)
    model = Mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    returned: dict[int, float] = {}

    def record(step: int) -> None:
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        returned[step] = torch.linalg.vector_norm(
            torch.stack([torch.linalg.vector_norm(g) for g in grads])
        ).item()

    with trickscope.init(project="p", url=capture.url, **settings) as run:
        run.watch(model, optimizer, every=100)
        # clip at 1e-3: always clipped; the total at the step is the threshold.
        _train(run, model, optimizer, 3, clip=1e-3, before_step=record)
        # a huge threshold never clips.
        _train(run, model, optimizer, 3, clip=1e6, accumulate=3)
    assert run.incidents.errors == 0, run.incidents.by_kind
    points = capture.captured.points()
    assert points["clip/observed"] == {0: 1.0, 1: 1.0, 2: 1.0, 3: 0.0, 4: 0.0, 5: 0.0}
    for step in (1, 2):  # step 0 is due: its total comes with the statistics
        assert points["grad_norm/total"][step] == pytest.approx(returned[step], rel=1e-4)
    assert points["grad_norm/total"][1] == pytest.approx(1e-3, rel=1e-3)
    for step in (1, 2):
        assert points["grad_norm/total_preclip"][step] > 10 * points["grad_norm/total"][step]
    for step in (3, 4, 5):
        assert points["grad_norm/total_preclip"][step] == points["grad_norm/total"][step]
    assert points["accum/backward_passes"] == {0: 1, 1: 1, 2: 1, 3: 3, 4: 3, 5: 3}


def test_gradients_carried_into_the_next_step_are_told_from_cleared_ones(
    capture: Any, settings: dict[str, Any]
) -> None:
    """zero_grad (to None or to zeros) clears; a loop without it carries every gradient on."""
    torch.manual_seed(0)
    model = Mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = nn.CrossEntropyLoss()

    def steps(count: int, clear: Any) -> None:
        for _ in range(count):
            clear()
            for _ in range(2):  # two micro-batches: the second adds to the first, rightly
                loss_fn(model(torch.randn(8, 6)), torch.randint(0, 4, (8,))).backward()
            optimizer.step()

    with trickscope.init(project="p", url=capture.url, **settings) as run:
        run.watch(model, optimizer, every=100)
        steps(3, lambda: optimizer.zero_grad(set_to_none=True))
        steps(3, lambda: optimizer.zero_grad(set_to_none=False))
        steps(3, lambda: None)  # the pitfall
    assert run.incidents.errors == 0, run.incidents.by_kind
    carried = capture.captured.points()["grad/carried_over"]
    assert carried == {0: 0.0, 1: 0.0, 2: 0.0, 3: 0.0, 4: 0.0, 5: 0.0, 6: 1.0, 7: 1.0, 8: 1.0}


def test_modes_at_the_step_and_evaluations_in_training_mode_are_counted(
    capture: Any, settings: dict[str, Any]
) -> None:
    """Dropout's mode at each due step; forwards under no_grad in training mode, counted
    between due steps and, after the last step, at close."""
    model = nn.Sequential(nn.Linear(6, 8), nn.Dropout(0.1), nn.Linear(8, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(8, 6), torch.randint(0, 4, (8,))
    with trickscope.init(project="p", url=capture.url, **settings) as run:
        run.watch(model, optimizer, every=2)
        for step in range(4):
            if step == 3:
                model.eval()  # left there: step 3 trains in eval mode (not due)
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
            optimizer.zero_grad()
            with torch.no_grad():
                model(x)  # an evaluation in whatever mode the model is in
        model.train()
        with torch.no_grad():
            model(x)
            model(x)  # after the last step: read at close
    assert run.incidents.errors == 0, run.incidents.by_kind
    points = capture.captured.points()
    assert points["mode/dropout_training"] == {0: 1.0, 2: 1.0}
    # Step 0's pre-hook sees none, step 2's those after steps 0 and 1; close sees the one after
    # step 2 and the two after train() (the one after step 3 ran in eval mode).
    assert points["mode/nograd_training_forwards"] == {0: 0.0, 2: 2.0, 3: 3.0}


def test_preclip_norm_matches_what_clip_grad_norm_returns(
    capture: Any, settings: dict[str, Any]
) -> None:
    torch.manual_seed(1)
    model = Mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    returned: dict[int, float] = {}
    loss_fn = nn.CrossEntropyLoss()
    with trickscope.init(project="p", url=capture.url, **settings) as run:
        run.watch(model, optimizer, every=100)
        for step in range(4):
            optimizer.zero_grad()
            loss_fn(model(torch.randn(16, 6)), torch.randint(0, 4, (16,))).backward()
            returned[step] = nn.utils.clip_grad_norm_(model.parameters(), 0.05).item()
            optimizer.step()
    points = capture.captured.points()
    for step in range(1, 4):
        assert points["grad_norm/total_preclip"][step] == pytest.approx(returned[step], rel=1e-4)


def test_the_first_nonfinite_weight_is_named_at_its_exact_step(
    capture: Any, settings: dict[str, Any]
) -> None:
    model = Mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

    def poison(step: int) -> None:
        if step == 7:
            with torch.no_grad():
                model.fc2.weight[0, 0] = float("nan")

    with trickscope.init(project="p", url=capture.url, **settings) as run:
        run.watch(model, optimizer, every=5)
        _train(run, model, optimizer, 10, before_step=poison)
    assert run.incidents.errors == 0, run.incidents.by_kind
    findings = [f for body in _bodies(capture, "/findings") for f in body["findings"]]
    assert len(findings) == 1
    finding = findings[0]
    assert (finding["check"], finding["severity"]) == ("nonfinite-weight", "error")
    assert (finding["step"], finding["layer"]) == (7, "fc2.weight")
    assert finding["evidence"]["kind"] == "weight" and finding["evidence"]["value"] == "NaN"
    # The totals go on after the finding (NaN from step 8 on: the poison spreads).
    totals = capture.captured.points()["grad_norm/total"]
    assert math.isfinite(totals[6]) and math.isnan(totals[9])


def test_a_nonfinite_gradient_is_found_when_the_weights_are_finite(
    capture: Any, settings: dict[str, Any]
) -> None:
    model = Mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # the update cannot spread it

    def poison(step: int) -> None:
        if step == 3:
            model.head.bias.grad[1] = float("inf")  # type: ignore[index]

    with trickscope.init(project="p", url=capture.url, **settings) as run:
        run.watch(model, optimizer, every=5)
        _train(run, model, optimizer, 5, before_step=poison)
    findings = [f for body in _bodies(capture, "/findings") for f in body["findings"]]
    assert [(f["check"], f["step"], f["layer"]) for f in findings] == [
        ("nonfinite-gradient", 3, "head.bias")
    ]
    assert findings[0]["evidence"]["value"] == "Infinity"


@pytest.mark.parametrize(("accumulate", "divide", "expected"), [(2, False, 1.0), (4, True, 0.25)])
def test_loss_scale_tells_a_divided_accumulated_loss_from_an_undivided_one(
    capture: Any, settings: dict[str, Any], accumulate: int, divide: bool, expected: float
) -> None:
    model = Mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with trickscope.init(project="p", url=capture.url, **settings) as run:
        run.watch(model, optimizer, every=2)
        _train(run, model, optimizer, 5, accumulate=accumulate, divide=divide)
    assert run.incidents.errors == 0, run.incidents.by_kind
    points = capture.captured.points()
    assert set(points["accum/loss_scale"]) == {0, 2, 4}
    for value in points["accum/loss_scale"].values():
        assert value == pytest.approx(expected, rel=1e-3)
    assert set(points["accum/backward_passes"].values()) == {accumulate}


def test_loss_scale_is_not_reported_for_a_loss_that_is_not_cross_entropy(
    capture: Any, settings: dict[str, Any]
) -> None:
    model = Mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with trickscope.init(project="p", url=capture.url, **settings) as run:
        run.watch(model, optimizer, every=1)
        for _ in range(3):
            optimizer.zero_grad()
            model(torch.randn(8, 6)).pow(2).mean().backward()
            optimizer.step()
    assert "accum/loss_scale" not in capture.captured.points()


def test_scale_of_recovers_the_reduction_of_cross_entropy() -> None:
    logits = torch.randn(32, 10, requires_grad=True)
    target = torch.randint(0, 10, (32,))
    nn.functional.cross_entropy(logits, target, reduction="sum").backward()
    value, residual, probabilities = loss_scale.scale_of(logits, logits.grad).tolist()  # type: ignore[arg-type]
    assert value == pytest.approx(32.0, rel=1e-4) and residual < 1e-5 and probabilities == 0


def test_cross_entropy_over_softmax_outputs_is_told_from_cross_entropy_over_logits() -> None:
    target = torch.randint(0, 10, (32,))
    probabilities = torch.softmax(torch.randn(32, 10), 1).requires_grad_()
    nn.functional.cross_entropy(probabilities, target).backward()  # a second softmax inside
    value, residual, twice = loss_scale.scale_of(probabilities, probabilities.grad).tolist()  # type: ignore[arg-type]
    assert residual < loss_scale.RESIDUAL and twice == 1.0
    positive = (torch.rand(32, 10) + 0.1).requires_grad_()  # non-negative logits, rows ≠ 1
    nn.functional.cross_entropy(positive, target).backward()
    assert loss_scale.scale_of(positive, positive.grad)[2] == 0.0  # type: ignore[arg-type]


class Block(nn.Module):
    def __init__(self, residual: bool) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 6)
        self.drop_path = DropPath(0.5)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = self.drop_path(torch.relu(self.fc(x)) + 1.0)  # a row of zeros only when dropped
        return x + branch if self.residual else branch


@pytest.mark.parametrize(("residual", "expected"), [(True, 0.0), (False, 1.0)])
def test_drop_path_without_a_residual_zeroes_the_block(
    capture: Any, settings: dict[str, Any], residual: bool, expected: float
) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(Block(residual), nn.Linear(6, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with trickscope.init(project="p", url=capture.url, **settings) as run:
        run.watch(model, optimizer, every=2)
        for _ in range(5):
            optimizer.zero_grad()
            model(torch.randn(64, 6)).sum().backward()
            optimizer.step()
    assert run.incidents.errors == 0, run.incidents.by_kind
    doc = _bodies(capture, "/setup")[0]["setup"]
    assert doc["drop_path"] == [
        {"module": "0.drop_path", "class": "DropPath", "rate": 0.5, "parent": "0"}
    ]
    points = capture.captured.points()
    assert set(points["drop_path/realised/0"]) == {0, 2, 4}
    for value in points["drop_path/realised/0"].values():
        assert 0.2 < value < 0.8
    assert set(points["drop_path/unresidual/0"].values()) == {expected}


def test_dead_units_count_rows_whose_gradient_is_exactly_zero() -> None:
    layer = nn.Linear(3, 4)
    layer.weight.grad = torch.ones(4, 3)
    layer.weight.grad[1] = 0
    layer.weight.grad[3] = 0
    layer.bias.grad = torch.zeros(4)  # 1-D: not counted
    out = dict(due.dead_units(["weight", "bias"], [layer.weight, layer.bias]))
    assert list(out) == ["grad_dead_units/weight"]
    assert out["grad_dead_units/weight"].item() == 0.5


def test_dead_units_of_a_gradient_read_in_several_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    from trickscope import _foreach

    monkeypatch.setattr(_foreach, "PIECE_ELEMENTS", 30)  # 10 rows of 3 per chunk
    layer = nn.Linear(3, 25)
    layer.weight.grad = torch.ones(25, 3)
    layer.weight.grad[[0, 9, 10, 24]] = 0
    out = dict(due.dead_units(["weight"], [layer.weight]))
    assert out["grad_dead_units/weight"].item() == pytest.approx(4 / 25)


def test_dead_units_and_eps_dominance_arrive_on_their_cadences(
    capture: Any, settings: dict[str, Any]
) -> None:
    model = Mlp()
    with torch.no_grad():
        model.fc2.weight[:3] = 0.0
        model.fc2.bias[:3] = -1.0  # units 0-2 of fc2 never fire: no gradient into their rows
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-8)
    with trickscope.init(project="p", url=capture.url, **settings) as run:
        run.watch(model, optimizer, every=1)
        _train(run, model, optimizer, 7)
    assert run.incidents.errors == 0, run.incidents.by_kind
    points = capture.captured.points()
    grad = model.fc2.weight.grad
    assert grad is not None
    dead = (grad.abs().amax(1) == 0).float().mean().item()
    assert dead >= 3 / 8 and points["grad_dead_units/fc2.weight"][6] == dead
    assert points["grad_dead_units/head.weight"][6] == 0.0
    assert set(points["opt/eps_dominance/fc1.weight"]) == {0, 5}  # every 5th due step
    # Among elements with v̂ > 0 only: fc2's dead rows do not count as eps-dominated.
    assert points["opt/eps_dominance/fc2.weight"][5] < 0.5


def test_a_failing_probe_never_reaches_the_training_loop(
    capture: Any, settings: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("probe failure")

    monkeypatch.setattr(loss_scale, "scale_of", broken)
    monkeypatch.setattr(due, "dead_units", broken)
    model = nn.Sequential(Block(True), nn.Linear(6, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with trickscope.init(project="p", url=capture.url, **settings) as run:
        run.watch(model, optimizer, every=1)
        for _ in range(3):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(torch.randn(8, 6)), torch.zeros(8).long()).backward()
            optimizer.step()
    assert run.incidents.by_kind.get("loss-scale probe") == 3
    assert run.incidents.by_kind.get("diagnosis post-step hook") == 3
    points = capture.captured.points()
    assert set(points["clip/observed"]) == {0, 1, 2}  # the rest still reports
    assert "grad_norm/conv.weight" not in points and "weight_norm/1.weight" in points


def test_a_watched_model_can_be_copied_and_saved(
    capture: Any, settings: dict[str, Any], tmp_path: Any
) -> None:
    model = nn.Sequential(Block(True), nn.Linear(6, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with trickscope.init(project="p", url=capture.url, **settings) as run:
        run.watch(model, optimizer, every=1)
        copied = copy.deepcopy(model)  # an EMA built after watch, say
        torch.save(model, tmp_path / "model.pt")
        loaded = torch.load(tmp_path / "model.pt", weights_only=False)
        for module in (copied, loaded):
            nn.functional.cross_entropy(module(torch.randn(4, 6)), torch.zeros(4).long()).backward()
        _train(run, model, optimizer, 0)
    assert run.incidents.errors == 0, run.incidents.by_kind


def test_check_every_thins_the_per_step_check(capture: Any, settings: dict[str, Any]) -> None:
    model = Mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with trickscope.init(project="p", url=capture.url, **settings) as run:
        run.watch(model, optimizer, every=10, check_every=3)
        _train(run, model, optimizer, 7)
    points = capture.captured.points()
    assert set(points["clip/observed"]) == {0, 3, 6}
    assert set(points["accum/backward_passes"]) == set(range(7))
    assert all(math.isfinite(v) for v in points["grad_norm/total"].values())


@pytest.mark.parametrize("clip", [1e6, 0.05])
def test_an_amp_unscale_is_not_taken_for_clipping(
    capture: Any, settings: dict[str, Any], clip: float
) -> None:
    torch.manual_seed(2)
    model = Mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)  # found in this frame, not passed
    returned: dict[int, float] = {}
    with trickscope.init(project="p", url=capture.url, **settings) as run:
        run.watch(model, optimizer, every=100)
        for step in range(4):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(
                model(torch.randn(16, 6)), torch.randint(0, 4, (16,))
            )
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            returned[step] = nn.utils.clip_grad_norm_(model.parameters(), clip).item()
            scaler.step(optimizer)
            scaler.update()
    assert run.incidents.errors == 0, run.incidents.by_kind
    assert _bodies(capture, "/setup")[0]["setup"]["scaler"] == {
        "class": "GradScaler",
        "enabled": True,
    }
    points = capture.captured.points()
    clipped = clip < 1.0
    assert set(points["clip/observed"].values()) == {1.0 if clipped else 0.0}
    for step in range(1, 4):
        assert points["grad_norm/total_preclip"][step] == pytest.approx(returned[step], rel=1e-4)


def test_a_block_with_two_drop_paths_reports_once_with_their_counts_summed() -> None:
    from trickscope._incidents import Incidents
    from trickscope.probes import drop_path

    class TwoPaths(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(6, 6)
            self.drop_path1 = DropPath(1.0)
            self.drop_path2 = DropPath(0.0)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x + self.drop_path1(self.fc(x) + 1.0)
            return x + self.drop_path2(self.fc(x) + 1.0)

    model = nn.Sequential(TwoPaths())
    probe = drop_path.DropPathProbe(drop_path.find(model), Incidents())
    probe.armed = True
    model(torch.randn(4, 6))
    (block, counts), *rest = probe.take()
    assert rest == [] and block == "0"
    assert counts.tolist() == [4.0, 0.0, 8.0]  # 4 of 8 (sample, path) pairs dropped, kept x
    probe.close()
