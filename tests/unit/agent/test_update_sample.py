"""The update ratio from a fixed sample of each tensor against the exact ratio of the whole."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.helpers import WatcherReports
from trickscope._incidents import Incidents
from trickscope.update_sample import SAMPLE_ELEMENTS, UpdateSample, stride_of
from trickscope.watch import Watcher

# The sampled ratio's largest relative error against the exact one, measured below on real
# steps of AdamW and SGD with momentum (README: "update_ratio"): under 3 % per layer and step.
SAMPLED_ERROR = 0.03


def test_the_sample_is_fixed_by_the_size_and_visits_every_row_and_column() -> None:
    assert stride_of(100) == 1
    assert stride_of(SAMPLE_ELEMENTS) == 1
    weight = torch.arange(2048 * 2048).reshape(2048, 2048)
    sample = UpdateSample([weight.float()])
    step = stride_of(weight.numel())
    assert step % 2 == 1 and step * SAMPLE_ELEMENTS <= weight.numel()
    picked = weight.reshape(-1)[::step][:SAMPLE_ELEMENTS]
    assert len(set((picked // 2048).tolist())) > 2000  # rows (output units)
    assert len(set((picked % 2048).tolist())) > 2000  # columns (inputs)
    assert sample.elements == SAMPLE_ELEMENTS


def test_sampled_half_weights_are_read_in_float32() -> None:
    weights = [torch.full((64, 256), 3.0, dtype=torch.bfloat16), torch.ones(5)]
    sample = UpdateSample(weights)
    sample.snapshot(weights)
    weights[0].add_(0.5)  # exact in bf16
    assert sample.ratio(weights).tolist() == pytest.approx([0.5 / 3.0, 0.0])
    assert sample.nbytes == 2 * 4 * (SAMPLE_ELEMENTS + 5)


@pytest.mark.parametrize("optimizer_name", ["adamw", "sgd"])
def test_the_sampled_ratio_is_close_to_the_exact_ratio(optimizer_name: str) -> None:
    """Tensors of at most ``SAMPLE_ELEMENTS`` are exact; larger ones within SAMPLED_ERROR."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(64, 384), nn.GELU(), nn.Linear(384, 384), nn.GELU(), nn.Linear(384, 10)
    )
    if optimizer_name == "adamw":
        optimizer: torch.optim.Optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    reports = WatcherReports()
    watcher = Watcher(
        model, optimizer, every=1, start_step=0, emit=reports, incidents=Incidents(),
        hist_every=0,
    )  # fmt: skip
    exact: dict[str, dict[int, float]] = {}
    for step in range(4):
        x, y = torch.randn(32, 64), torch.randint(0, 10, (32,))
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        before = {name: p.detach().double().clone() for name, p in model.named_parameters()}
        optimizer.step()
        for name, p in model.named_parameters():
            change = (p.detach().double() - before[name]).norm() / before[name].norm()
            exact.setdefault(name, {})[step] = change.item()
    watcher.close()
    assert watcher._incidents.errors == 0
    worst = 0.0
    for name, p in model.named_parameters():
        sampled = reports.points[f"update_ratio/{name}"]
        for step, value in exact[name].items():
            error = abs(sampled[step] - value) / value
            if p.numel() <= SAMPLE_ELEMENTS:
                assert error < 1e-5, (name, step)
            else:
                worst = max(worst, error)
    assert 0 < worst < SAMPLED_ERROR
