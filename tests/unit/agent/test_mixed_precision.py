"""Statistics of half-precision parameters (bf16, fp16; with fp32 master weights under autocast
and without), steps a GradScaler skips, and a torch.compile'd model under ``watch``."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn

import trickscope
from tests.helpers import WatcherReports
from trickscope import _foreach, stats
from trickscope._incidents import Incidents
from trickscope.watch import Watcher

FP16_MAX = torch.finfo(torch.float16).max


def _reference(t: torch.Tensor) -> dict[str, float]:
    x = t.double()
    return {"norm": x.norm().item(), "mean": x.mean().item(), "std": x.std().item()}


@pytest.mark.parametrize("segmented", [False, True])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_tensors_near_the_fp16_max_give_finite_float32_statistics(
    monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype, segmented: bool
) -> None:
    """Values near 65504: their squares overflow fp16 (and sums of them would overflow a
    half accumulator), yet every statistic is float32, finite and equal to float64's."""
    monkeypatch.setattr(_foreach, "_segmented", lambda device: segmented)
    torch.manual_seed(0)
    big = (FP16_MAX * (0.5 + 0.5 * torch.rand(3000))).to(dtype)
    mixed = torch.cat([big[:1000], -big[1000:2000], torch.zeros(500)]).to(dtype)
    tensors = [big, mixed.reshape(50, 50)]
    n = stats.numels(tensors)
    scratch = stats.Scratch(tensors)
    grads = stats.grad_stats(tensors, n, scratch=scratch)
    weights = stats.weight_stats(tensors, n, scratch=scratch)
    hist = stats.histograms(tensors, scratch=scratch)
    assert grads.dtype == weights.dtype == torch.float32
    assert torch.isfinite(grads).all() and torch.isfinite(weights).all()
    assert torch.isfinite(hist).all()
    for column, t in enumerate(tensors):
        expected = _reference(t)
        assert grads[0, column].item() == pytest.approx(expected["norm"], rel=1e-5)
        assert grads[1, column].item() == t.double().abs().max().item()
        assert grads[2, column].item() == pytest.approx(expected["mean"], rel=1e-4, abs=1.0)
        assert grads[3, column].item() == pytest.approx(expected["std"], rel=1e-4)
        assert weights[0, column].item() == pytest.approx(expected["norm"], rel=1e-5)
        assert hist[column, 3:].sum().item() == t.numel()
    assert grads[4, 1].item() == pytest.approx(500 / 2500)


def _watcher(model: nn.Module, optimizer: Any, reports: WatcherReports, **options: Any) -> Watcher:
    return Watcher(model, optimizer, start_step=0, emit=reports, incidents=Incidents(), **options)


@pytest.mark.parametrize(
    ("param_dtype", "autocast"),
    [
        (torch.bfloat16, False),  # half weights, no master copy
        (torch.float16, False),
        (torch.float32, True),  # fp32 master weights, bf16 compute (autocast)
    ],
)
def test_half_precision_training_reports_float32_statistics_without_overflow(
    param_dtype: torch.dtype, autocast: bool
) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 8)).to(param_dtype)
    with torch.no_grad():
        model[0].weight.mul_(200.0)  # ±50: the sum of their squares overflows fp16
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-6)
    reports = WatcherReports()
    watcher = _watcher(model, optimizer, reports, every=1, hist_every=1)
    for _ in range(2):
        x = torch.randn(4, 16, dtype=param_dtype)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = model(x).float().square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    watcher.close()
    assert watcher._incidents.errors == 0, watcher._incidents.by_kind
    points = reports.points
    norm = points["weight_norm/0.weight"][1]
    assert math.isfinite(norm) and norm**2 > 10 * FP16_MAX
    assert norm == pytest.approx(model[0].weight.double().norm().item(), rel=1e-3)
    grad = points["grad_norm/0.weight"][1]
    assert math.isfinite(grad) and grad > 0
    for name, series in points.items():
        if name.split("/")[0] in ("grad_norm", "weight_norm", "weight_std", "update_ratio"):
            assert all(math.isfinite(v) for v in series.values()), name


def _amp_step(model: nn.Module, optimizer: Any, scaler: Any, x: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(model(x).pow(2).mean()).backward()
    scaler.step(optimizer)
    scaler.update()


def test_skipped_steps_are_counted_apart_from_the_steps() -> None:
    """Two skips before the first update, one between updates, and growth in between: the
    steps count updates only, ``amp/skipped_steps`` the skips so far."""
    model = nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=64.0, growth_interval=2)
    good, bad = torch.ones(2, 3), torch.full((2, 3), math.inf)
    reports = WatcherReports()
    watcher = _watcher(model, optimizer, reports, every=1, scaler=scaler)
    for x in (bad, bad, good, good, good, bad, good):
        _amp_step(model, optimizer, scaler, x)
    watcher.close()
    assert watcher._incidents.errors == 0, watcher._incidents.by_kind
    assert watcher.step == 3
    assert reports.points[stats.AMP_SKIPPED] == {0: 2.0, 1: 2.0, 2: 2.0, 3: 3.0}
    assert reports.points[stats.AMP_SCALE] == {0: 16.0, 1: 16.0, 2: 32.0, 3: 16.0}


def test_a_compiled_model_is_not_recompiled_by_the_hooks(
    capture: Any, settings: dict[str, Any]
) -> None:
    """Due and plain steps alternate (statistics, histograms, the diagnosis' probes arm and
    disarm): the compiled graph stays the one compiled first."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    compiled = torch.compile(model, backend="eager")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(4, 8), torch.randint(0, 4, (4,))
    with trickscope.init(project="p", url=capture.url, **settings) as run:
        run.watch(compiled, optimizer, every=2, hist_every=3)
        with torch._dynamo.config.patch(error_on_recompile=True):
            for _ in range(7):
                loss = nn.functional.cross_entropy(compiled(x), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        watcher = run._watcher
        assert watcher is not None and watcher.step == 6
        assert watcher._layouts  # due steps ran
    torch._dynamo.reset()
    assert run.incidents.errors == 0, run.incidents.by_kind
