"""Health rules on gradients and weights: non-finite values, jumps, vanishing, dead, no gradient."""

from __future__ import annotations

import math

import numpy as np

from tests.unit.server.health_view import Run, check, healthy_run, skipped
from trickscope_server.services.health import diagnose


def test_a_healthy_run_raises_nothing_and_every_check_reports_its_status() -> None:
    diagnosis = diagnose(healthy_run())
    assert diagnosis.findings == []
    statuses = {c.id: c.status for c in diagnosis.checks}
    assert statuses["warmup"] == "ran" and statuses["drop-path"] == "skipped"
    assert all(c.reason for c in diagnosis.checks if c.status == "skipped")


def test_the_first_nonfinite_layer_is_named_weights_before_gradients_at_one_step() -> None:
    run = healthy_run()
    run.values("grad_norm/head.weight")[120:] = math.nan
    run.values("grad_norm/conv.weight")[150:] = math.inf
    (found,) = check(run, "nonfinite")
    assert (found.check, found.layer, found.step, found.severity) == (
        "nonfinite-gradient", "head.weight", 120, "error"
    )  # fmt: skip
    run.values("weight_norm/norm.weight")[120:] = math.nan  # later in model order, same step
    (found,) = check(run, "nonfinite")
    assert (found.check, found.layer, found.step) == ("nonfinite-weight", "norm.weight", 120)


def test_a_nonfinite_loss_is_named_with_its_step() -> None:
    run = healthy_run()
    run.values("loss/train")[300:] = math.nan
    run.add("val/loss", [1.0, math.nan], [100, 200])  # an evaluation loss is not preferred
    (found,) = check(run, "nonfinite")
    assert (found.check, found.step) == ("nonfinite-loss", 300)


def test_agent_nonfinite_findings_are_the_answer_and_pass_through() -> None:
    run = healthy_run()
    run.values("grad_norm/conv.weight")[200:] = math.nan  # the sampled norms lag the agent
    run.agent_findings = {
        "nonfinite-weight|head.weight": {
            "check": "nonfinite-weight", "severity": "error", "title": "head.weight is NaN",
            "why": "w", "remedy": "r", "step": 197, "layer": "head.weight",
            "evidence": {"value": "NaN"},
        }
    }  # fmt: skip
    assert check(run, "nonfinite") == []
    (found,) = check(run, "agent")
    assert (found.source, found.check, found.step, found.layer) == (
        "agent", "nonfinite-weight", 197, "head.weight"
    )  # fmt: skip
    assert found.as_dict()["detail"] == "w r"


def test_a_gradient_jump_fires_from_the_fourth_sample_on_a_short_run() -> None:
    run = Run(layers=["a.weight"]).add("grad_norm/a.weight", [1.0, 1.1, 0.9, 500.0, 1.0])
    (found,) = check(run, "exploding-gradient")
    assert (found.layer, found.step, found.check) == ("a.weight", 3, "exploding-gradient")


def test_a_jump_of_the_total_norm_is_found_per_step() -> None:
    run = healthy_run()
    run.values("grad_norm/total")[250] = 1e3
    (found,) = check(run, "exploding-gradient")
    assert (found.layer, found.step, found.evidence["series"]) == (None, 250, "grad_norm/total")


def test_early_transients_and_a_first_sample_are_no_jumps() -> None:
    run = Run(layers=["a.weight"])
    run.add("grad_norm/a.weight", [1e-4, 50.0, 20.0, 8.0, 4.0, 3.0, 2.0] + [1.0] * 50)
    assert check(run, "exploding-gradient") == []
    assert check(healthy_run(), "exploding-gradient") == []


def test_vanishing_and_spread_gradients_are_reported() -> None:
    run = healthy_run()
    run.values("grad_norm/conv.weight")[:] = 1e-9
    found = {f.check: f for f in check(run, "vanishing-gradient")}
    assert found["vanishing-gradient"].layer == "conv.weight"
    assert found["gradient-spread"].layer == "conv.weight"


def test_a_bias_cancelled_by_the_batchnorm_after_it_is_not_vanishing() -> None:
    """Linear → BatchNorm: the bias' gradient is float noise while its weights' is healthy."""
    run = healthy_run()
    run.values("grad_norm/conv.bias")[:] = 1e-10
    assert check(run, "vanishing-gradient") == []
    run.values("grad_norm/conv.weight")[:] = 1e-9  # the whole layer vanishes: said
    found = {f.check: f for f in check(run, "vanishing-gradient")}
    assert found["vanishing-gradient"].evidence["layers"] == ["conv.weight", "conv.bias"]


def test_the_deepest_dead_layer_is_named_with_the_step_it_died() -> None:
    run = healthy_run()
    for layer in ("conv.weight", "conv.bias", "norm.weight"):
        run.values(f"grad_zero_frac/{layer}")[150:] = 1.0
    (found,) = check(run, "dead-layer")
    assert (found.check, found.layer, found.step) == ("dead-layer", "norm.weight", 150)
    assert found.evidence["also_dead"] == ["conv.weight", "conv.bias"]


def test_a_layer_dead_once_but_alive_at_the_end_is_not_dead() -> None:
    run = healthy_run()
    run.values("grad_zero_frac/head.weight")[100:200] = 1.0
    assert check(run, "dead-layer") == []


def test_dead_units_rising_through_the_run() -> None:
    run = healthy_run()
    run.values("grad_dead_units/head.weight")[:] = np.linspace(0.05, 0.9, 400)
    (found,) = check(run, "dead-units-rising")
    assert found.layer == "head.weight" and 150 < (found.step or 0) < 260
    assert check(healthy_run(), "dead-units-rising") == []


def test_a_trainable_parameter_without_gradient_warns_and_a_frozen_one_is_info() -> None:
    run = healthy_run()
    run.setup["params"].append(
        {"name": "extra.weight", "shape": [3], "module": "Linear", "kind": "weight",
         "group": 0, "requires_grad": True}
    )  # fmt: skip
    run.setup["params"].append(
        {"name": "backbone.weight", "shape": [3], "module": "Linear", "kind": "weight",
         "group": None, "requires_grad": False}
    )  # fmt: skip
    found = {f.severity: f for f in check(run, "no-gradient")}
    assert (found["warning"].check, found["warning"].layer) == ("no-gradient", "extra.weight")
    assert found["info"].layer == "backbone.weight" and "frozen" in found["info"].title
    assert check(healthy_run(), "no-gradient") == []


def test_without_a_setup_a_declared_layer_without_gradient_is_listed_as_frozen() -> None:
    run = healthy_run()
    run.setup = {}
    run.layers.append("frozen.weight")
    (found,) = check(run, "no-gradient")
    assert (found.severity, found.layer) == ("info", "frozen.weight")


def test_rules_say_why_they_skip() -> None:
    run = Run()
    assert skipped(run, "dead-layer") is not None
    assert skipped(run, "exploding-gradient") == "no gradient norms were recorded"
    assert skipped(run, "ema") == "no EMA model was seen"


def test_a_sparse_embedding_gradient_is_not_a_dead_layer() -> None:
    run = healthy_run()
    run.setup["params"][0]["kind"] = "embedding"  # conv.weight, as far as the rule knows
    run.values("grad_zero_frac/conv.weight")[:] = 0.9995
    assert check(run, "dead-layer") == []


def test_a_dead_linear_is_named_by_its_weight_not_its_bias() -> None:
    run = healthy_run()
    for layer in ("conv.weight", "conv.bias"):  # the bias comes after the weight in model order
        run.values(f"grad_zero_frac/{layer}")[150:] = 1.0
    (found,) = check(run, "dead-layer")
    assert (found.layer, found.step) == ("conv.weight", 150)
    assert found.evidence["also_dead"] == ["conv.bias"]
