"""What the health findings say beyond their check: evidence as strict JSON, the other layers at
the same step, titles, which loss is the training loss, series that were never recorded."""

from __future__ import annotations

import math

import numpy as np

from tests.unit.server.health_view import Run, check, healthy_run, skipped
from trickscope_server.services.health.model import json_safe
from trickscope_server.services.health.series import loss_names


def test_evidence_is_strict_json() -> None:
    evidence = {"v": [math.nan, math.inf, -math.inf, np.float64(1.5), np.int64(2)], "k": 0.0}
    assert json_safe(evidence) == {"v": ["NaN", "Infinity", "-Infinity", 1.5, 2], "k": 0.0}


def test_layers_going_nonfinite_at_the_same_step_are_listed_and_later_ones_not() -> None:
    run = healthy_run()
    for layer, step in (("conv.weight", 120), ("head.weight", 120), ("norm.weight", 150)):
        run.values(f"grad_norm/{layer}")[step:] = math.nan
    (found,) = check(run, "nonfinite")
    assert (found.layer, found.evidence["others"]) == ("conv.weight", ["head.weight"])
    assert found.title == "The gradient of conv.weight became NaN/Inf at step 120"
    run.values("weight_norm/conv.bias")[100:] = math.inf
    (found,) = check(run, "nonfinite")
    assert found.title == "The weights of conv.bias became NaN/Inf at step 100"


def test_the_nonfinite_check_runs_on_a_loss_alone_and_skips_without_anything() -> None:
    assert skipped(Run().add("lr/group0", [0.1, 0.1]), "nonfinite") is not None
    assert check(Run().add("loss", [1.0, math.nan]), "nonfinite")[0].step == 1


def test_a_parameter_outside_the_optimizer_is_not_missing_a_gradient() -> None:
    run = healthy_run()
    run.setup["params"].append({"name": "buffer.weight", "shape": [3], "kind": "weight",
                                "group": None, "requires_grad": True})  # fmt: skip
    assert check(run, "no-gradient") == []


def test_a_flat_loss_that_moves_a_little_is_no_spike() -> None:
    run = healthy_run()
    run.values("loss/train")[:] = 1.0
    run.values("loss/train")[300:] = 1.0001  # quantised: the history has no spread at all
    assert [f.check for f in check(run, "loss")] == ["loss-stalled"]  # not a spike


def test_a_loss_that_never_falls_is_stalled_even_after_an_early_collapse() -> None:
    run = healthy_run()
    rng = np.random.default_rng(5)
    run.values("loss/train")[:] = 2.3 + 0.1 * rng.standard_normal(400)  # chance level throughout
    run.values("loss/train")[0] = 2.29
    run.values("loss/train")[1:3] = [10.8, 18.9]  # too high an LR: a blow-up, then a dead network
    (found,) = check(run, "loss")
    assert (found.check, found.severity, found.step) == ("loss-stalled", "warning", 320)
    run.values("loss/train")[320:] = 2.0  # fell by 13 %: learning, slowly
    assert [f.check for f in check(run, "loss")] != ["loss-stalled"]


def test_no_warmup_says_the_loss_step_that_made_it_a_warning() -> None:
    run = healthy_run()
    run.values("lr/group0")[:] = 1e-4
    run.values("loss/train")[5:15] += 1.5
    (found,) = check(run, "warmup")
    assert found.title.endswith("and the loss rose or spiked at step 5")


def test_scheduler_calls_counted_from_a_resumed_run_still_lag() -> None:
    run = healthy_run()
    run.setup["scheduler"] = {"class": "CosineAnnealingLR", "planned_steps": 400}
    run.add("sched/calls", 1_000 + np.arange(400) // 50)  # resumed: the count starts at 1,000
    (found,) = check(run, "lr-jumps")
    assert found.evidence["calls_per_step"] < 0.1


def test_clipping_without_a_preclip_norm_leaves_the_ratio_unknown() -> None:
    run = healthy_run()
    run.values("clip/observed")[:] = 1.0
    (found,) = check(run, "clipping-always")
    assert found.evidence["preclip_over_threshold"] is None


def test_training_losses_come_first_then_other_losses_then_evaluation_ones() -> None:
    run = Run()
    # Names chosen so that alphabetical order would put each group in the wrong place.
    names = ("val_loss", "xent_loss", "aux_loss", "total_train_loss", "loss/train", "loss_scale")
    for name in names:
        run.add(name, [1.0, 0.5])
    expected = ["loss/train", "total_train_loss", "aux_loss", "xent_loss", "val_loss"]
    assert loss_names(run) == expected


def test_lists_of_layers_put_the_worst_first() -> None:
    run = healthy_run()
    run.values("grad_norm/conv.weight")[200] = 1e3
    run.values("grad_norm/head.weight")[300] = 1e3
    (found,) = check(run, "exploding-gradient")
    assert (found.layer, found.evidence["later"]) == ("conv.weight", ["grad_norm/head.weight"])
    for layer, share in (("conv.weight", 0.6), ("head.weight", 0.9)):
        run.values(f"opt/eps_dominance/{layer}")[:] = share
    (found,) = check(run, "eps-dominates")
    assert found.evidence["layers"] == ["head.weight", "conv.weight"]
    for layer, ratio in (("conv.weight", 0.2), ("head.weight", 0.5)):
        run.values(f"update_ratio/{layer}")[:] = ratio
    (found,) = check(run, "update-ratio")
    assert found.evidence["layers"] == ["head.weight", "conv.weight"]
