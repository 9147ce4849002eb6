from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from trickscope._foreach import use_foreach
from trickscope.tricks import ModelEma, ema_distance, ema_module, report_ema


def make_model() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))


def perturb(model: nn.Module) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        bn = model[1]
        bn.running_mean.add_(torch.randn(8))
        bn.running_var.mul_(1.5)
        bn.num_batches_tracked += 1


def reference(model: nn.Module, steps: int, decay_at, every: int = 1, buffers: str = "average"):
    """The explicit recurrence ν ← α·ν + (1−α)·θ, one tensor at a time."""
    nu = {k: v.clone() for k, v in model.state_dict().items()}
    models = []
    for step in range(steps):
        perturb(model)
        models.append(copy.deepcopy(model.state_dict()))
        if step % every:
            continue
        alpha = decay_at(step)
        for k, theta in model.state_dict().items():
            is_buffer = k.endswith(("running_mean", "running_var", "num_batches_tracked"))
            if not theta.is_floating_point() or (is_buffer and buffers == "copy"):
                nu[k] = theta.clone()
            else:
                nu[k] = alpha * nu[k] + (1 - alpha) * theta
    return nu, models


@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize(
    ("warmup", "every", "buffers"),
    [("none", 1, "average"), ("ratio", 1, "average"), ("power", 3, "copy"), ("ratio", 2, "copy")],
)
def test_model_ema_follows_the_explicit_recurrence(foreach, warmup, every, buffers) -> None:
    model = make_model()
    ema = ModelEma(model, decay=0.9, warmup=warmup, update_every=every, buffers=buffers)
    ref_model = copy.deepcopy(model)
    nu, states = reference(ref_model, 12, ema.get_decay, every, buffers)
    with use_foreach(foreach):
        for step, state in enumerate(states):
            model.load_state_dict(state)
            ema.update(model, step)
    for key, value in ema.module.state_dict().items():
        torch.testing.assert_close(value, nu[key], msg=key)
    assert ema.updates == len(range(0, 12, every))


def test_decay_warmup_forms_are_the_documented_ones() -> None:
    model = make_model()
    ratio = ModelEma(model, 0.999, warmup="ratio")
    assert ratio.get_decay(0) == pytest.approx(0.1)
    assert ratio.get_decay(90) == pytest.approx(91 / 100)
    assert ratio.get_decay(10**6) == 0.999
    power = ModelEma(model, 0.999, warmup="power", warmup_gamma=1.0, warmup_power=0.75)
    assert power.get_decay(15) == pytest.approx(1 - 16**-0.75)
    assert ModelEma(model, 0.99).get_decay(0) == 0.99


def test_bad_arguments_name_the_parameter() -> None:
    with pytest.raises(ValueError, match="decay"):
        ModelEma(make_model(), 1.5)
    with pytest.raises(ValueError, match="buffers"):
        ModelEma(make_model(), buffers="ignore")
    with pytest.raises(ValueError, match="update_every"):
        ModelEma(make_model(), update_every=0)


def test_distance_is_relative_norm_of_the_difference_and_is_reported(sink) -> None:
    model = make_model()
    ema = ModelEma(model, 0.5, run=sink, report_every=2)
    perturb(model)
    nu = torch.cat([p.flatten() for p in ema.module.parameters()])
    theta = torch.cat([p.flatten() for p in model.parameters()])
    expect = (nu - theta).norm() / theta.norm()
    torch.testing.assert_close(ema_distance(ema, model), expect)
    for step in range(3):
        ema.update(model, step)
    assert [s for _, s in sink.calls] == [0, 2]
    assert sink.last("ema/decay") == 0.5
    assert sink.last("ema/distance").ndim == 0


def test_timm_model_ema_v3_and_averaged_model_are_accepted() -> None:
    from timm.utils import ModelEmaV3
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    model = make_model()
    timm_ema = ModelEmaV3(model, decay=0.9)
    swa = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9))
    assert ema_module(timm_ema) is timm_ema.module
    assert ema_module(swa) is swa.module
    assert ema_module(ModelEma(model)) is not model
    perturb(model)
    timm_ema.update(model, step=5)
    swa.update_parameters(model)
    for ema in (timm_ema, swa):
        nu = torch.cat([p.flatten() for p in ema_module(ema).parameters()])
        theta = torch.cat([p.flatten() for p in model.parameters()])
        torch.testing.assert_close(ema_distance(ema, model), (nu - theta).norm() / theta.norm())
    calls = []

    class Sink:
        def log(self, metrics, step=None):
            calls.append((metrics, step))

    report_ema(Sink(), timm_ema, model, step=7)
    assert calls[0][0]["ema/decay"] == pytest.approx(timm_ema.get_decay(7))
    assert calls[0][1] == 7
