from __future__ import annotations

import pytest
import torch
from torch import nn

from trickscope._foreach import use_foreach
from trickscope.tricks import (
    OptimizerReporter,
    build_optimizer,
    eps_dominance,
    param_groups_weight_decay,
    report_hyperparameters,
)


def train(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int) -> None:
    for _ in range(steps):
        x = torch.randn(16, 6)
        x[:, 0] = 0.0  # the first input column never gets a gradient: v = 0 there
        loss = model(x).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_build_optimizer_returns_real_torch_optimizers(sink) -> None:
    model = nn.Linear(6, 3)
    sgd = build_optimizer(model.parameters(), "sgd", lr=0.1, momentum=0.8, nesterov=True, run=sink)
    assert type(sgd) is torch.optim.SGD and sgd.defaults["nesterov"] is True
    metrics, step = sink.calls[-1]
    assert step == 0
    assert metrics["opt/momentum/group0"] == 0.8
    assert metrics["opt/nesterov/group0"] == 1.0
    assert metrics["opt/effective_lr/group0"] == pytest.approx(0.1 / 0.2)
    adamw = build_optimizer(param_groups_weight_decay(model, 0.05), "adamw", lr=1e-3, eps=1e-6)
    assert type(adamw) is torch.optim.AdamW
    assert [g["weight_decay"] for g in adamw.param_groups] == [0.05, 0.0]
    metrics = report_hyperparameters(adamw, None)
    assert metrics["opt/beta2/group1"] == 0.999 and metrics["opt/eps/group0"] == 1e-6


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(kind="lion"), "kind"),
        (dict(lr=0.0), "lr"),
        (dict(kind="sgd", momentum=1.0), "momentum"),
        (dict(kind="sgd", momentum=0.0, nesterov=True), "nesterov"),
        (dict(betas=(0.9, 1.0)), "betas"),
        (dict(eps=0.0), "eps"),
    ],
)
def test_bad_arguments_name_the_parameter(kwargs, name) -> None:
    args = dict(lr=0.1) | kwargs
    with pytest.raises(ValueError, match=name):
        build_optimizer(nn.Linear(2, 2).parameters(), **args)


@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("foreach", [True, False])
def test_eps_dominance_matches_a_hand_computation(amsgrad, foreach) -> None:
    model = nn.Sequential(nn.Linear(6, 5), nn.Linear(5, 3))
    eps = 1e-4
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=eps, amsgrad=amsgrad)
    train(model, optimizer, 3)
    names = {id(p): n for n, p in model.named_parameters()}
    with use_foreach(foreach):
        got = eps_dominance(optimizer, names)
    assert set(got) == set(names.values())
    for name, param in model.named_parameters():
        state = optimizer.state[param]
        v = state["max_exp_avg_sq"] if amsgrad else state["exp_avg_sq"]
        v_hat = v / (1 - 0.999 ** state["step"].item())
        expect = (v_hat.sqrt() < eps).float().mean()
        torch.testing.assert_close(got[name].float(), expect, msg=name)
    assert got["0.weight"].item() >= 1 / 6  # the zeroed input column is eps-dominated


def test_reporter_reports_eps_dominance_on_due_steps_only(sink) -> None:
    model = nn.Linear(6, 3)
    optimizer = torch.optim.AdamW(param_groups_weight_decay(model, 0.01), lr=1e-3)
    reporter = OptimizerReporter(optimizer, sink, every=2)
    for step in range(3):
        train(model, optimizer, 1)
        reporter.report(step)
    due = [s for m, s in sink.calls if "opt/eps_dominance/weight" in m]
    assert due == [0, 2]
    assert all("opt/beta1/group0" in m for m, _ in sink.calls)
    assert reporter.describe()["optimizer"] == "AdamW"


def test_eps_dominance_of_a_wrapped_model_is_named_after_the_module_inside(sink) -> None:
    model = nn.Linear(6, 3)
    wrapped = nn.DataParallel(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    reporter = OptimizerReporter(optimizer, sink, every=1, model=wrapped)
    train(model, optimizer, 1)
    reporter.report(0)
    names = {m for metrics, _ in sink.calls for m in metrics if m.startswith("opt/eps_dominance/")}
    assert names == {"opt/eps_dominance/weight", "opt/eps_dominance/bias"}


def test_sgd_without_adam_state_reports_no_eps_dominance() -> None:
    model = nn.Linear(6, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    train(model, optimizer, 1)
    assert eps_dominance(optimizer) == {}
