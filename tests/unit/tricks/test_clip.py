from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from trickscope._foreach import use_foreach
from trickscope.tricks import clip_grad_norm, clip_grad_value, log_clip


def model_with_grads(scale: float = 10.0) -> nn.Module:
    model = nn.Sequential(nn.Linear(5, 7), nn.Linear(7, 3))
    (model(torch.randn(4, 5)).sum() * scale).backward()
    return model


def twin(model: nn.Module) -> nn.Module:
    """A deep copy with the gradients copied too (deepcopy leaves them out)."""
    other = copy.deepcopy(model)
    for a, b in zip(model.parameters(), other.parameters(), strict=True):
        b.grad = a.grad.clone()
    return other


@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf])
@pytest.mark.parametrize("max_norm", [0.5, 1e6])
@pytest.mark.parametrize("nonfinite", ["skip", "ignore", "raise"])
def test_clip_grad_norm_equals_torch(norm_type, max_norm, nonfinite, sink) -> None:
    ours = model_with_grads()
    theirs = twin(ours)
    total = clip_grad_norm(
        ours.parameters(), max_norm, norm_type=norm_type, nonfinite=nonfinite, run=sink, step=4
    )
    expect = torch.nn.utils.clip_grad_norm_(theirs.parameters(), max_norm, norm_type=norm_type)
    torch.testing.assert_close(total, expect)
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad)
    metrics, step = sink.calls[-1]
    assert step == 4 and metrics["clip/threshold"] == max_norm
    clipped = expect.item() > max_norm
    assert metrics["clip/clipped"].item() == float(clipped)
    post = torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(p.grad, norm_type) for p in ours.parameters()]),
        norm_type,
    )
    torch.testing.assert_close(metrics["clip/post_norm"], post, rtol=1e-4, atol=1e-6)
    assert metrics["clip/coef"].item() == pytest.approx(min(1.0, max_norm / (expect.item() + 1e-6)))


@pytest.mark.parametrize("bad", [math.nan, math.inf])
@pytest.mark.parametrize("foreach", [True, False])
def test_nonfinite_skip_leaves_params_unchanged_after_a_step(bad, foreach, sink) -> None:
    model = model_with_grads()
    model[0].weight.grad[0, 0] = bad
    before = copy.deepcopy(model.state_dict())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with use_foreach(foreach):
        total = clip_grad_norm(model.parameters(), 1.0, nonfinite="skip", run=sink)
    assert not torch.isfinite(total)
    optimizer.step()
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key])
    assert all(bool((p.grad == 0).all()) for p in model.parameters())
    assert sink.last("clip/post_norm").item() == 0.0
    assert sink.last("clip/coef").item() == 0.0


def test_nonfinite_raise_raises_and_bad_arguments_name_the_parameter() -> None:
    model = model_with_grads()
    model[1].bias.grad[0] = math.nan
    with pytest.raises(RuntimeError, match="non-finite"):
        clip_grad_norm(model.parameters(), 1.0, nonfinite="raise")
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm(model.parameters(), 0.0)
    with pytest.raises(ValueError, match="nonfinite"):
        clip_grad_norm(model.parameters(), 1.0, nonfinite="zero")
    with pytest.raises(ValueError, match="clip_value"):
        clip_grad_value(model.parameters(), -1.0)


def test_clip_grad_value_equals_torch(sink) -> None:
    ours = model_with_grads()
    theirs = twin(ours)
    pre_max = max(p.grad.abs().max().item() for p in ours.parameters())
    clip_grad_value(ours.parameters(), 0.3, run=sink, step=1)
    torch.nn.utils.clip_grad_value_(theirs.parameters(), 0.3)
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad)
    assert sink.last("clip/pre_max").item() == pytest.approx(pre_max)
    assert sink.last("clip/clipped").item() == 1.0


def test_log_clip_reports_the_return_value_of_torch_clip(sink) -> None:
    model = model_with_grads()
    total = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    log_clip(sink, total, 1.0, step=9)
    metrics, step = sink.calls[-1]
    assert step == 9 and metrics["clip/pre_norm"] is not None
    torch.testing.assert_close(metrics["clip/post_norm"], total * (1.0 / (total + 1e-6)))
    assert metrics["clip/clipped"].item() == 1.0
