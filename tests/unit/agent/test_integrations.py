"""The pieces the trainer callbacks share: the closure evaluated ahead of watch's hooks, the
guard that keeps callback failures out of training, and the names of logged values."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from tests.helpers import import_or_skip
from trickscope.integrations._closure import evaluate_closure_first
from trickscope.integrations._hooks import inner_optimizer, last_step, numeric_items

CLIP = 0.1


def setup_step() -> tuple[nn.Module, torch.optim.Optimizer, list[float], list[int]]:
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    seen: list[float] = []
    calls: list[int] = []

    def look(opt: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        seen.append(float(torch.nn.utils.get_total_norm(grads)) if grads else -1.0)

    assert evaluate_closure_first(optimizer) is not None
    optimizer.register_step_pre_hook(look)  # like watch's: registered after
    return model, optimizer, seen, calls


def closure_for(model: nn.Module, optimizer: torch.optim.Optimizer, calls: list[int]):
    def closure() -> torch.Tensor:
        calls.append(1)
        optimizer.zero_grad()
        loss = model(torch.ones(8, 4)).pow(2).sum() * 100
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        return loss

    return closure


@pytest.mark.parametrize("positional", [False, True])
def test_later_pre_hooks_see_the_gradients_the_closure_left(positional: bool) -> None:
    model, optimizer, seen, calls = setup_step()
    before = model.weight.detach().clone()
    closure = closure_for(model, optimizer, calls)
    loss = optimizer.step(closure) if positional else optimizer.step(closure=closure)
    assert isinstance(loss, torch.Tensor) and loss.item() > 0
    assert len(calls) == 1  # evaluated once, not again inside step()
    assert seen == [pytest.approx(CLIP, rel=1e-4)]  # after backward and clipping
    assert not torch.equal(model.weight, before)  # the update still happened


def test_a_step_without_a_closure_is_untouched() -> None:
    model, optimizer, seen, calls = setup_step()
    closure_for(model, optimizer, calls)()
    optimizer.step()
    assert len(calls) == 1 and seen == [pytest.approx(CLIP, rel=1e-4)]


def test_the_training_steps_own_exception_propagates() -> None:
    _, optimizer, _, _ = setup_step()

    def broken() -> torch.Tensor:
        raise RuntimeError("bad batch")

    with pytest.raises(RuntimeError, match="bad batch"):
        optimizer.step(closure=broken)


def test_lbfgs_is_left_alone() -> None:
    model = nn.Linear(2, 1)
    assert evaluate_closure_first(torch.optim.LBFGS(model.parameters())) is None


def test_inner_optimizer_unwraps_accelerate() -> None:
    accelerate = import_or_skip("accelerate")
    accelerate.Accelerator(cpu=True)
    try:
        model = nn.Linear(2, 1)
        optimizer = torch.optim.AdamW(model.parameters())
        wrapped = accelerate.optimizer.AcceleratedOptimizer(optimizer, device_placement=False)
        assert inner_optimizer(wrapped) is optimizer
        assert inner_optimizer(optimizer) is optimizer
        assert inner_optimizer(None) is None
    finally:  # the accelerator's state is process-wide: leave none behind for other tests
        accelerate.state.AcceleratorState._reset_state(reset_partial_state=True)


def test_last_step_and_numeric_items() -> None:
    assert [last_step(g) for g in (0, 1, 5)] == [0, 0, 4]
    assert last_step(3, start=10) == 10
    value = torch.tensor(2.0)
    kept = numeric_items({"a": 1, "b": value, "c": "text", "d": True, "e": torch.ones(3)})
    assert kept == {"a": 1.0, "b": value}


def test_a_failing_callback_hook_warns_once_and_never_raises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import_or_skip("transformers")
    from trickscope.integrations.transformers import TrickscopeCallback, rename

    callback = TrickscopeCallback(disabled=True)
    with caplog.at_level(logging.WARNING, logger="trickscope"):
        for _ in range(3):  # a state without global_step: the hook fails inside trickscope
            assert callback.on_train_begin(object(), object(), None) is None
    warnings = [r for r in caplog.records if "on_train_begin" in r.getMessage()]
    assert len(warnings) == 1
    assert callback.incidents.by_kind == {"TrickscopeCallback.on_train_begin": 3}
    assert [rename(k) for k in ("loss", "eval_loss", "test_acc", "grad_norm")] == [
        "train/loss",
        "eval/loss",
        "test/acc",
        "train/grad_norm",
    ]
