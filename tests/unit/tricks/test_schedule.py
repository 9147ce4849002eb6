from __future__ import annotations

import math

import pytest
import torch

from trickscope.tricks import WarmupDecay, lr_at, recommended_warmup_steps

BASE, TOTAL, WARM = 0.1, 100, 10


def cosine(step: int, base: float = BASE, min_lr: float = 0.0) -> float:
    t = min(step - WARM, TOTAL - WARM)
    return min_lr + (base - min_lr) * 0.5 * (1 + math.cos(math.pi * t / (TOTAL - WARM)))


def test_linear_warmup_edges_and_cosine_decay_match_the_closed_form() -> None:
    kw = dict(base_lr=BASE, total_steps=TOTAL, warmup_steps=WARM)
    assert lr_at(0, **kw) == pytest.approx(BASE / WARM)
    assert lr_at(WARM - 1, **kw) == pytest.approx(BASE)
    assert lr_at(WARM, **kw) == pytest.approx(BASE)  # first decay step: cos(0)
    assert lr_at(WARM + 1, **kw) == pytest.approx(cosine(WARM + 1))
    assert lr_at(55, **kw) == pytest.approx(cosine(55))
    assert lr_at(TOTAL, **kw) == pytest.approx(0.0, abs=1e-12)
    assert lr_at(TOTAL + 50, **kw) == pytest.approx(0.0, abs=1e-12)


def test_min_lr_is_the_floor_of_cosine_and_linear_decay() -> None:
    for decay in ("cosine", "linear"):
        lrs = [
            lr_at(s, base_lr=BASE, total_steps=TOTAL, warmup_steps=WARM, decay=decay, min_lr=0.01)
            for s in range(TOTAL + 5)
        ]
        assert min(lrs[WARM:]) == pytest.approx(0.01)
        assert lrs[TOTAL] == pytest.approx(0.01)
    lin = lr_at(55, base_lr=BASE, total_steps=TOTAL, warmup_steps=WARM, decay="linear", min_lr=0.01)
    assert lin == pytest.approx(0.01 + (BASE - 0.01) * (1 - 45 / 90))


def test_exponential_warmup_is_geometric_from_the_start_factor_to_base() -> None:
    kw = dict(base_lr=BASE, total_steps=TOTAL, warmup_steps=WARM, warmup="exponential")
    lrs = [lr_at(s, warmup_start_factor=0.01, **kw) for s in range(WARM)]
    assert lrs[0] == pytest.approx(BASE * 0.01)
    assert lrs[-1] == pytest.approx(BASE)
    ratios = [b / a for a, b in zip(lrs, lrs[1:], strict=False)]
    assert ratios == pytest.approx([0.01 ** (-1 / (WARM - 1))] * (WARM - 1))


def test_step_and_constant_decay() -> None:
    kw = dict(base_lr=BASE, total_steps=TOTAL, warmup_steps=WARM)
    assert lr_at(WARM + 29, decay="step", step_size=30, gamma=0.5, **kw) == pytest.approx(BASE)
    assert lr_at(WARM + 30, decay="step", step_size=30, gamma=0.5, **kw) == pytest.approx(BASE / 2)
    assert lr_at(WARM + 61, decay="step", step_size=30, gamma=0.5, **kw) == pytest.approx(BASE / 4)
    assert lr_at(77, decay="constant", **kw) == BASE


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(total_steps=0), "total_steps"),
        (dict(warmup_steps=200), "warmup_steps"),
        (dict(warmup="cubic"), "warmup"),
        (dict(decay="poly"), "decay"),
        (dict(min_lr=1.0), "min_lr"),
        (dict(decay="step"), "step_size"),
        (dict(gamma=0.0), "gamma"),
        (dict(base_lr=-1.0), "base_lr"),
    ],
)
def test_invalid_arguments_raise_value_error_naming_the_parameter(kwargs, name) -> None:
    args = dict(base_lr=BASE, total_steps=TOTAL) | kwargs
    with pytest.raises(ValueError, match=name):
        lr_at(0, **args)
    with pytest.raises(ValueError, match="step"):
        lr_at(-1, base_lr=BASE, total_steps=TOTAL)


def test_warmup_decay_drives_a_real_optimizer_with_per_group_base_lrs(sink) -> None:
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([{"params": [a], "lr": BASE}, {"params": [b], "lr": BASE / 10}])
    sched = WarmupDecay(opt, total_steps=TOTAL, warmup_steps=WARM, run=sink)
    assert sched.warmup_steps == WARM
    seen = []
    for step in range(TOTAL):
        sched.step(step)
        seen.append([g["lr"] for g in opt.param_groups])
        a.grad = torch.ones(2)
        b.grad = torch.ones(2)
        opt.step()
    for step, (lr0, lr1) in enumerate(seen):
        expect = lr_at(step, base_lr=BASE, total_steps=TOTAL, warmup_steps=WARM)
        assert lr0 == pytest.approx(expect)
        assert lr1 == pytest.approx(expect / 10)
    assert sched.get_last_lr() == seen[-1]
    logged = dict(sink.series("lr/group1"))
    assert logged[37] == pytest.approx(seen[37][1])


def test_implicit_steps_follow_torch_last_epoch_semantics() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=BASE)
    sched = WarmupDecay(opt, total_steps=TOTAL, warmup_steps=WARM)
    assert sched.last_epoch == 0
    assert opt.param_groups[0]["lr"] == pytest.approx(BASE / WARM)
    for _ in range(5):
        opt.step()
        sched.step()
    assert sched.last_epoch == 5
    assert opt.param_groups[0]["lr"] == pytest.approx(
        lr_at(5, base_lr=BASE, total_steps=TOTAL, warmup_steps=WARM)
    )


def test_resuming_from_state_dict_gives_the_same_sequence() -> None:
    def make() -> tuple[torch.optim.Optimizer, WarmupDecay]:
        opt = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=BASE)
        return opt, WarmupDecay(opt, total_steps=TOTAL, warmup_steps=WARM, decay="linear")

    opt, sched = make()
    straight = []
    for _ in range(40):
        straight.append(opt.param_groups[0]["lr"])
        sched.step()
    opt, sched = make()
    resumed = []
    for _ in range(15):
        resumed.append(opt.param_groups[0]["lr"])
        sched.step()
    opt_state, sched_state = opt.state_dict(), sched.state_dict()
    assert sched_state["warmup_steps"] == WARM and sched_state["last_epoch"] == 15
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=123.0)
    opt2.load_state_dict(opt_state)
    sched2 = WarmupDecay(opt2, total_steps=1, last_epoch=14)
    sched2.load_state_dict(sched_state)
    for _ in range(25):
        resumed.append(opt2.param_groups[0]["lr"])
        sched2.step()
    assert resumed == pytest.approx(straight)


def test_torch_schedulers_agree_with_lr_at() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=BASE)
    warm = torch.optim.lr_scheduler.LinearLR(opt, 1 / WARM, 1.0, total_iters=WARM - 1)
    for step in range(WARM):
        expect = lr_at(step, base_lr=BASE, total_steps=TOTAL, warmup_steps=WARM)
        assert opt.param_groups[0]["lr"] == pytest.approx(expect)
        opt.step()
        warm.step()
    opt = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=BASE)
    cos = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=TOTAL - WARM, eta_min=0.001)
    step_lr_opt = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=BASE)
    steplr = torch.optim.lr_scheduler.StepLR(step_lr_opt, step_size=7, gamma=0.5)
    for t in range(TOTAL - WARM):
        common = dict(base_lr=BASE, total_steps=TOTAL, warmup_steps=WARM)
        expect = lr_at(WARM + t, min_lr=0.001, **common)
        assert opt.param_groups[0]["lr"] == pytest.approx(expect, rel=1e-6, abs=1e-9)
        expect_step = lr_at(WARM + t, decay="step", step_size=7, gamma=0.5, **common)
        assert step_lr_opt.param_groups[0]["lr"] == pytest.approx(expect_step)
        opt.step()
        cos.step()
        step_lr_opt.step()
        steplr.step()


def test_timm_cosine_scheduler_agrees_with_lr_at_after_warmup() -> None:
    from timm.scheduler import CosineLRScheduler

    opt = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=BASE)
    timm_sched = CosineLRScheduler(
        opt, t_initial=TOTAL - WARM, lr_min=0.001, warmup_t=WARM, warmup_lr_init=BASE / WARM,
        warmup_prefix=True, t_in_epochs=False,
    )  # fmt: skip
    for step in range(WARM, TOTAL):
        timm_sched.step_update(step)
        expect = lr_at(step, base_lr=BASE, total_steps=TOTAL, warmup_steps=WARM, min_lr=0.001)
        assert opt.param_groups[0]["lr"] == pytest.approx(expect)


def test_recommended_warmup_follows_ma_and_yarats() -> None:
    assert recommended_warmup_steps(0.999) == 2000
    with pytest.raises(ValueError, match="beta2"):
        recommended_warmup_steps(1.0)
