"""Health rules on the loss, clipping and the learning-rate schedule."""

from __future__ import annotations

import math

import numpy as np

from tests.unit.server.health_view import adam_setup, check, healthy_run, skipped


def _lr(run, values) -> None:  # type: ignore[no-untyped-def]
    run.values("lr/group0")[:] = values


def test_a_recovered_loss_blip_is_an_info_spike_and_inf_is_not_a_spike() -> None:
    run = healthy_run()
    run.values("loss/train")[250] = 50.0
    (found,) = check(run, "loss")
    assert (found.check, found.severity, found.step) == ("loss-spike", "info", 250)
    run = healthy_run()
    run.values("loss/train")[250] = math.inf
    assert check(run, "loss") == []


def test_a_loss_that_rises_and_stays_up_diverges() -> None:
    run = healthy_run()
    loss = run.values("loss/train")
    loss[200:] = loss[200] + np.linspace(0, 3, 200)
    (found,) = check(run, "loss")
    assert (found.check, found.severity) == ("loss-divergence", "warning")
    assert 200 <= (found.step or 0) <= 320


def test_a_loss_that_rises_then_goes_nonfinite_diverges() -> None:
    run = healthy_run()
    loss = run.values("loss/train")
    loss[200:300] = loss[200] + np.linspace(0, 5, 100)
    loss[300:] = math.nan
    (found,) = check(run, "loss")
    assert found.check == "loss-divergence" and found.evidence["nonfinite_step"] == 300


def test_a_negative_noisy_flat_loss_is_healthy() -> None:
    run = healthy_run()
    rng = np.random.default_rng(3)
    run.values("loss/train")[:] = -5.0 + 0.1 * rng.standard_normal(400)
    assert [f for f in check(run, "loss") if f.severity != "info"] == []


def test_clipping_on_every_step_is_measured_and_named() -> None:
    run = healthy_run()
    run.values("clip/observed")[:] = 1.0
    run.add("clip/threshold", [0.01] * 400)
    (found,) = check(run, "clipping-always")
    assert (found.check, found.step, found.evidence["inferred"]) == ("clipping-always", 399, False)
    assert "0.01" in found.detail


def test_clipping_always_under_a_grad_scaler_says_to_unscale_first() -> None:
    run = healthy_run()
    run.values("clip/observed")[:] = 1.0
    assert "unscale_" not in check(run, "clipping-always")[0].remedy
    run.setup["scaler"] = {"class": "GradScaler", "enabled": True}
    assert "scaler.unscale_(optimizer) before" in check(run, "clipping-always")[0].remedy


def test_clipping_is_inferred_from_a_pinned_total_norm() -> None:
    run = healthy_run()
    del run.columns["clip/observed"]
    run.values("grad_norm/total")[:] = 1.0
    (found,) = check(run, "clipping-always")
    assert found.evidence["inferred"] is True and "inferred" in found.title
    del run.columns["grad_norm/total"]
    assert skipped(run, "clipping-always") is not None


def test_adam_without_warmup_at_a_high_lr_warns_and_at_a_low_lr_informs() -> None:
    run = healthy_run()
    _lr(run, 1e-2)
    (found,) = check(run, "warmup")
    assert (found.check, found.severity, found.step) == ("no-warmup", "warning", 0)
    assert found.evidence["recommended_steps"] == 40  # min(2/(1-0.99)=200, 400/10)
    _lr(run, 1e-4)
    (found,) = check(run, "warmup")
    assert (found.check, found.severity) == ("no-warmup", "info")


def test_no_warmup_warns_at_a_low_lr_when_the_loss_rises_early() -> None:
    run = healthy_run()
    _lr(run, 1e-4)
    run.values("loss/train")[5:15] += 1.5
    (found,) = check(run, "warmup")
    assert (found.severity, found.evidence["early_trouble_step"]) == ("warning", 5)


def test_a_short_warmup_and_the_nanogpt_config_keys() -> None:
    run = healthy_run()
    run.setup = {}
    run.config = {"beta1": 0.9, "beta2": 0.999, "max_iters": 100_000}
    _lr(run, np.minimum(1.0, (np.arange(400) + 1) / 20) * 1e-3)
    (found,) = check(run, "warmup")
    assert (found.check, found.step, found.evidence["recommended_steps"]) == (
        "short-warmup", 19, 2000
    )  # fmt: skip


def test_warmup_is_judged_only_for_adam_family_optimizers_and_not_radam() -> None:
    run = healthy_run()
    _lr(run, 1e-2)
    run.setup["optimizer"]["family"] = "sgd"
    assert skipped(run, "warmup") == "the optimizer is not Adam-family"
    run.setup["optimizer"].update(family="adam", **{"class": "RAdam"})
    assert "RAdam" in (skipped(run, "warmup") or "")
    run.setup = {}
    run.config = {"optimizer": "AdamW", "betas": [0.9, 0.999]}
    assert [f.check for f in check(run, "warmup")] == ["no-warmup"]


def test_a_warmup_in_a_few_jumps_means_a_scheduler_stepped_per_epoch() -> None:
    run = healthy_run()
    levels = np.repeat([1e-4, 3e-4, 6e-4, 1e-3], 25)
    _lr(run, np.concatenate([levels, np.full(300, 1e-3)]))
    (found,) = check(run, "lr-jumps")
    assert (found.check, found.step, found.evidence["jump_steps"]) == ("lr-jumps", 25, [25, 50, 75])
    assert check(healthy_run(), "lr-jumps") == []


def test_scheduler_calls_lagging_optimizer_steps() -> None:
    run = healthy_run()
    run.setup["scheduler"] = {"class": "CosineAnnealingLR", "planned_steps": 400}
    run.add("sched/calls", np.arange(400) // 50)
    (found,) = check(run, "lr-jumps")
    assert found.check == "lr-jumps" and found.evidence["calls_per_step"] < 0.1


def test_lr_zero_at_the_start_and_long_before_the_end() -> None:
    run = healthy_run()
    run.values("lr/group0")[:30] = 0.0
    (found,) = check(run, "lr-zero")
    assert (found.check, found.step, found.evidence["zero_steps"]) == ("lr-zero-start", 0, 30)
    run = healthy_run()
    run.values("lr/group0")[200:] = 0.0
    (found,) = check(run, "lr-zero")
    assert (found.check, found.step) == ("lr-zero-early", 200)
    assert check(healthy_run(), "lr-zero") == []


def test_lr_decayed_to_a_negligible_share_of_its_peak_counts_as_zero() -> None:
    """StepLR(step_size=1, gamma=0.5) meant per epoch but stepped per step: never exactly 0."""
    run = healthy_run()
    steps = run.values("lr/group0").size
    run.values("lr/group0")[:] = 1e-3 * 0.5 ** np.arange(steps)
    (found,) = check(run, "lr-zero")
    assert (found.check, found.step) == ("lr-zero-early", 20)  # 0.5**20 < 1e-6
    run = healthy_run()  # a cosine decay to a small floor is healthy
    run.values("lr/group0")[:] = 1e-5 + 1e-3 * 0.5 * (1 + np.cos(np.linspace(0, np.pi, steps)))
    assert check(run, "lr-zero") == []


def test_an_epoch_scheduler_stepped_per_epoch_is_fine() -> None:
    run = healthy_run()
    run.setup["scheduler"] = {"class": "StepLR", "planned_steps": None, "warmup_steps": None}
    run.add("sched/calls", np.arange(400) // 50)
    assert check(run, "lr-jumps") == []


def test_clipping_a_little_below_the_norm_is_info_under_adam_and_far_below_a_warning() -> None:
    run = healthy_run()
    run.setup = adam_setup([("a.weight", "weight")])
    run.values("clip/observed")[:] = 1.0
    run.add("clip/threshold", [1.0] * 400)
    run.add("grad_norm/total_preclip", np.linspace(1.0, 4.0, 400))  # nanoGPT on a small model
    (found,) = check(run, "clipping-always")
    assert found.severity == "info"
    run.values("grad_norm/total_preclip")[:] = 20.0  # the threshold is the step size now
    (found,) = check(run, "clipping-always")
    assert found.severity == "warning" and found.evidence["preclip_over_threshold"] == 20.0
    run.setup["optimizer"]["family"] = "sgd"  # SGD's step scales with the clipped norm
    run.values("grad_norm/total_preclip")[:] = 2.0
    (found,) = check(run, "clipping-always")
    assert found.severity == "warning"
