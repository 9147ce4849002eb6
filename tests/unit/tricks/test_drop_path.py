from __future__ import annotations

import pytest
import torch
from torch import nn

from trickscope.tricks import DropPath, DropPathMonitor, drop_path, drop_path_rates


def test_drop_path_keeps_the_expectation_and_masks_whole_samples() -> None:
    x = torch.randn(20000, 3, 4).abs() + 1.0
    y = drop_path(x, 0.3, training=True)
    dropped = (y == 0).flatten(1)
    assert bool((dropped.all(1) | ~dropped.any(1)).all())  # per-sample: all or nothing
    assert dropped.all(1).float().mean().item() == pytest.approx(0.3, abs=0.02)
    kept = ~dropped.all(1)
    assert torch.allclose(y[kept], x[kept] / 0.7)
    assert y.mean().item() == pytest.approx(x.mean().item(), rel=0.03)


def test_drop_path_is_the_identity_in_eval_and_at_rate_zero() -> None:
    x = torch.randn(8, 5)
    assert drop_path(x, 0.5, training=False) is x
    assert drop_path(x, 0.0, training=True) is x
    module = DropPath(0.5).eval()
    assert module(x) is x
    assert "p=0.500" in repr(module)
    with pytest.raises(ValueError, match="p must be"):
        DropPath(1.5)


def test_rates_rise_linearly_like_timm() -> None:
    from timm.layers import calculate_drop_path_rates

    assert drop_path_rates(12, 0.2) == pytest.approx(calculate_drop_path_rates(0.2, 12))
    assert drop_path_rates(1, 0.2) == [0.0]


class Block(nn.Module):
    def __init__(self, dp: nn.Module) -> None:
        super().__init__()
        self.f = nn.Linear(4, 4)
        self.drop_path = dp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.f(x))


def test_monitor_reports_rates_and_realised_fractions_on_due_steps(sink) -> None:
    rates = drop_path_rates(3, 0.3)
    model = nn.Sequential(*[Block(DropPath(r)) for r in rates])
    monitor = DropPathMonitor(model, sink, every=2)
    assert monitor.describe()["drop_path_rates"] == {
        "0.drop_path": 0.0, "1.drop_path": 0.15, "2.drop_path": 0.3,
    }  # fmt: skip
    for step in range(4):
        model(torch.randn(1000, 4))
        if step == 3:  # not due: the forward recorded nothing
            assert model[2].drop_path.realised is None
        monitor.report(step)
    assert [s for _, s in sink.calls] == [0, 2]
    realised = sink.last("drop_path/realised/2.drop_path")
    assert isinstance(realised, torch.Tensor) and realised.ndim == 0
    assert realised.item() == pytest.approx(0.3, abs=0.06)
    assert sink.last("drop_path/rate/1.drop_path") == 0.15
    assert model[2].drop_path.record is True  # armed for the forward of step 4


def test_monitor_names_the_blocks_of_a_wrapped_model_as_the_module_inside() -> None:
    model = nn.Sequential(*[Block(DropPath(r)) for r in drop_path_rates(2, 0.2)])
    wrapped = torch.compile(nn.DataParallel(model), backend="eager")
    assert DropPathMonitor(wrapped).describe()["drop_path_rates"] == {
        "0.drop_path": 0.0, "1.drop_path": 0.2,
    }  # fmt: skip


def test_monitor_recognises_timm_and_torchvision_modules_and_flags_problems(sink) -> None:
    from timm.layers import DropPath as TimmDropPath
    from torchvision.ops import StochasticDepth

    model = nn.Sequential(
        Block(TimmDropPath(0.2)), Block(StochasticDepth(0.1, "row")), Block(DropPath(0.3))
    )
    monitor = DropPathMonitor(model, sink)
    assert monitor.rates() == pytest.approx(
        {"0.drop_path": 0.2, "1.drop_path": 0.1, "2.drop_path": 0.3}
    )
    checks = [(f.check, f.layer) for f in monitor.check()]
    assert ("drop_path_rate_not_rising", "1.drop_path") in checks
    model.eval()
    model[2].drop_path.train()
    checks = [(f.check, f.layer) for f in monitor.check()]
    assert ("drop_path_active_in_eval", "2.drop_path") in checks
    monitor.report(0)
    assert sink.last("drop_path/rate/0.drop_path") == pytest.approx(0.2)
