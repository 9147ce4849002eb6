from __future__ import annotations

import pytest
import torch
from torch import nn

from trickscope.tricks import DropPath, ModelEma, evaluate_raw_and_ema


def eval_fn(model: nn.Module, batch) -> dict[str, torch.Tensor | int]:
    x, y = batch
    logits = model(x)
    return {
        "correct": (logits.argmax(1) == y).sum(),
        "loss_sum": nn.functional.cross_entropy(logits, y, reduction="sum"),
        "count": y.numel(),
    }


def test_raw_and_ema_run_on_the_same_batches_and_modes_are_restored(sink) -> None:
    model = nn.Sequential(nn.Linear(4, 8), DropPath(0.5), nn.BatchNorm1d(8), nn.Linear(8, 3))
    ema = ModelEma(model, decay=0.0)
    with torch.no_grad():
        model[0].weight.add_(1.0)
    batches = [(torch.randn(10, 4), torch.randint(0, 3, (10,))) for _ in range(3)]
    model.train()
    model[2].eval()  # a deliberately frozen BatchNorm stays frozen
    metrics = evaluate_raw_and_ema(model, ema, iter(batches), eval_fn, run=sink, step=11)
    assert model.training and model[1].training and not model[2].training
    assert not ema.module.training
    for tag, module in (("raw", model), ("ema", ema.module)):
        module.eval()
        with torch.no_grad():
            x = torch.cat([b[0] for b in batches])
            y = torch.cat([b[1] for b in batches])
            logits = module(x)
        assert metrics[f"eval/acc_{tag}"].item() == pytest.approx(
            (logits.argmax(1) == y).float().mean().item()
        )
        torch.testing.assert_close(
            metrics[f"eval/loss_{tag}"], nn.functional.cross_entropy(logits, y)
        )
    assert sink.calls[-1][1] == 11
    assert set(sink.calls[-1][0]) == {
        "eval/acc_raw",
        "eval/acc_ema",
        "eval/loss_raw",
        "eval/loss_ema",
    }


def test_eval_fn_without_count_is_rejected() -> None:
    model = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="count"):
        evaluate_raw_and_ema(model, model, [torch.randn(3, 2)], lambda m, b: {"correct": 1})
