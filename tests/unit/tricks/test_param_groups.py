from __future__ import annotations

import pytest
import torch
from torch import nn

from trickscope.tricks import (
    check_weight_decay,
    describe_param_groups,
    param_groups_weight_decay,
    report_weight_decay,
    weight_decay_kind,
)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, 4, 8))
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 8)
        self.ln = nn.LayerNorm(8)
        self.head = nn.Linear(8, 2)
        self.head.requires_grad_(False)


def names_of(groups, i):
    return set(groups[i]["param_names"])


def test_only_trainable_multi_dim_unexcluded_params_are_decayed() -> None:
    model = Net()
    frozen_before = {n: p.requires_grad for n, p in model.named_parameters()}
    groups = param_groups_weight_decay(model, 0.05, exclude=["pos_embed"])
    assert names_of(groups, 0) == {"conv.weight", "fc.weight"}
    assert names_of(groups, 1) == {
        "pos_embed", "conv.bias", "bn.weight", "bn.bias", "fc.bias", "ln.weight", "ln.bias",
    }  # fmt: skip
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0]
    assert {n: p.requires_grad for n, p in model.named_parameters()} == frozen_before
    assert all("head" not in n for g in groups for n in g["param_names"])
    optimizer = torch.optim.AdamW(groups, lr=1e-3)
    described = describe_param_groups(optimizer)
    assert described["group0"]["tensors"] == 2
    assert described["group0"]["elements"] == 8 * 3 * 9 + 64
    assert described["group1"]["names"] == groups[1]["param_names"]


def test_a_wrapped_model_is_split_and_checked_under_its_own_names() -> None:
    # DataParallel/DDP and torch.compile prefix every name: exclusions and findings use the
    # names of the module inside, as the user wrote them.
    model = Net()
    wrapped = torch.compile(nn.DataParallel(model), backend="eager")
    groups = param_groups_weight_decay(wrapped, 0.05, exclude=["pos_embed"])
    assert names_of(groups, 0) == {"conv.weight", "fc.weight"}
    assert "pos_embed" in names_of(groups, 1)
    decayed_everything = torch.optim.AdamW(wrapped.parameters(), weight_decay=0.05)
    findings = check_weight_decay(decayed_everything, wrapped)
    assert any("bn.weight" in finding.message for finding in findings), findings
    assert not any("module." in finding.message for finding in findings), findings


def test_glob_patterns_exclude_and_exclude_1d_can_be_turned_off() -> None:
    groups = param_groups_weight_decay(Net(), 0.1, exclude=["*.bias", "f?.*"], exclude_1d=False)
    assert names_of(groups, 0) == {"pos_embed", "conv.weight", "bn.weight", "ln.weight"}


def test_bad_arguments_name_the_parameter() -> None:
    with pytest.raises(ValueError, match="weight_decay"):
        param_groups_weight_decay(Net(), -1.0)
    with pytest.raises(TypeError, match="exclude"):
        param_groups_weight_decay(Net(), 0.1, exclude="bias")


def test_weight_decay_kind_tells_decoupled_from_coupled() -> None:
    params = [nn.Parameter(torch.ones(2, 2))]
    assert weight_decay_kind(torch.optim.AdamW(params, weight_decay=0.01)) == "decoupled"
    assert weight_decay_kind(torch.optim.Adam(params, weight_decay=0.01)) == "coupled_l2"
    assert weight_decay_kind(torch.optim.SGD(params, lr=0.1, weight_decay=1e-4)) == "coupled_l2"
    assert weight_decay_kind(torch.optim.SGD(params, lr=0.1)) == "none"
    assert weight_decay_kind(torch.optim.AdamW(params, weight_decay=0.0)) == "none"


def test_detector_flags_adam_with_l2_and_decay_on_biases_and_norms() -> None:
    model = Net()
    findings = check_weight_decay(torch.optim.Adam(model.parameters(), weight_decay=1e-4), model)
    checks = [f.check for f in findings]
    assert "adam_coupled_weight_decay" in checks
    flagged = {f.layer for f in findings if f.check == "decay_on_bias_or_norm"}
    assert {"conv.bias", "bn.weight", "ln.weight", "fc.bias"} <= flagged
    assert "conv.weight" not in flagged
    good = torch.optim.AdamW(param_groups_weight_decay(model, 0.05), lr=1e-3)
    assert check_weight_decay(good, model) == []
    sgd = torch.optim.SGD(param_groups_weight_decay(model, 0.5), lr=0.1)
    assert [f.check for f in check_weight_decay(sgd)] == ["weight_decay_out_of_range"]


def test_report_gives_decay_and_per_step_shrink_per_group(sink) -> None:
    optimizer = torch.optim.SGD(param_groups_weight_decay(Net(), 1e-4), lr=0.1)
    report_weight_decay(optimizer, sink, step=3)
    metrics, step = sink.calls[-1]
    assert step == 3
    assert metrics["wd/group0"] == 1e-4 and metrics["wd/group1"] == 0.0
    assert metrics["wd/shrink/group0"] == pytest.approx(1e-5)
