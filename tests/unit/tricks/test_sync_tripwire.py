"""The tricks never move data to the host on the training thread."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

from trickscope.tricks import (
    DropPath,
    DropPathMonitor,
    GradientAccumulator,
    ModelEma,
    OptimizerReporter,
    WarmupDecay,
    clip_grad_norm,
    log_clip,
    param_groups_weight_decay,
    report_weight_decay,
)

FORBIDDEN = ("item", "cpu", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__")


@pytest.fixture
def tripwire(monkeypatch):
    main = threading.main_thread()

    def trap(name, original):
        def wrapped(self, *args, **kwargs):
            if threading.current_thread() is main and tripwire.armed:
                raise AssertionError(f"Tensor.{name} synced on the training thread")
            return original(self, *args, **kwargs)

        return wrapped

    tripwire.armed = False
    for name in FORBIDDEN:
        monkeypatch.setattr(torch.Tensor, name, trap(name, getattr(torch.Tensor, name)))
    return tripwire


class Block(nn.Module):
    def __init__(self, p: float) -> None:
        super().__init__()
        self.f = nn.Linear(8, 8)
        self.drop_path = DropPath(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(torch.relu(self.f(x)))


def test_a_training_loop_with_every_trick_never_syncs(tripwire, sink) -> None:
    model = nn.Sequential(Block(0.1), Block(0.2), nn.Linear(8, 2))
    optimizer = torch.optim.AdamW(param_groups_weight_decay(model, 0.05), lr=1e-3)
    scheduler = WarmupDecay(optimizer, total_steps=20, warmup_steps=3, run=sink)
    ema = ModelEma(model, 0.9, warmup="ratio", run=sink)
    monitor = DropPathMonitor(model, sink, every=2)
    reporter = OptimizerReporter(optimizer, sink, every=2, model=model)
    acc = GradientAccumulator(model, optimizer, steps=2, micro_batch_size=4, run=sink)
    data = [(torch.randn(4, 8), torch.randn(4, 2)) for _ in range(12)]
    # torch's CPU Adam reads its step count with .item(); that is torch's, not the tricks'.
    optimizer.register_step_pre_hook(lambda *_: setattr(tripwire, "armed", False))
    optimizer.register_step_post_hook(lambda *_: setattr(tripwire, "armed", True))
    tripwire.armed = True
    step = 0
    for x, y in data:
        with acc.micro_step():
            acc.backward(nn.functional.mse_loss(model(x), y))
        if acc.should_step:
            clip_grad_norm(model.parameters(), 0.5, nonfinite="skip", run=sink, step=step)
            acc.step(step)
            ema.update(model, step)
            monitor.report(step)
            reporter.report(step)
            report_weight_decay(optimizer, sink, step)
            log_clip(sink, torch.tensor(3.0), 1.0, step)
            step += 1
            scheduler.step(step)
    tripwire.armed = False
    assert step == 6
    keys = sink.keys()
    for key in (
        "lr/group0", "wd/shrink/group0", "ema/decay", "ema/distance", "clip/pre_norm",
        "clip/clipped", "accum/effective_batch", "opt/beta2/group1", "opt/eps_dominance/2.weight",
        "drop_path/rate/1.drop_path", "drop_path/realised/1.drop_path",
    ):  # fmt: skip
        assert key in keys, key
    tensors = [v for m, _ in sink.calls for v in m.values() if isinstance(v, torch.Tensor)]
    assert tensors and all(t.ndim == 0 for t in tensors)


def test_the_tripwire_catches_a_sync(tripwire) -> None:
    tripwire.armed = True
    with pytest.raises(AssertionError, match="item"):
        torch.tensor(1.0).item()
    tripwire.armed = False
