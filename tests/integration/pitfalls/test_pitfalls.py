"""Each script carries one classic pitfall, attached with the default attach only
(``init`` + ``watch(model, optimizer)`` + the loss). The health report must name the rule, the
layer and the step window."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from tests.helpers import LiveServer
from tests.integration.pitfalls._health import check_list_is_well_formed, explain, health, train


@dataclass(frozen=True)
class Pitfall:
    script: str
    rules: frozenset[str]  # any one of them names the pitfall
    check: str  # the check (the /health `checks` entry) that runs those rules
    layer: Callable[[str | None], bool] | None = None  # None: the layer is not asserted
    steps: tuple[int, int] | None = None  # inclusive window for the finding's step
    severities: frozenset[str] = field(default=frozenset({"warning", "error"}))


def named(*names: str) -> Callable[[str | None], bool]:
    return lambda layer: layer in names


PITFALLS = [
    Pitfall("decay_on_norm_bias", frozenset({"decay-on-norm-bias"}), "decay-on-norm-bias",
            named("blocks.0.norm.weight", "blocks.0.norm.bias", "blocks.1.norm.weight",
                  "blocks.1.norm.bias", "norm.weight", "norm.bias")),
    Pitfall("adam_coupled_l2", frozenset({"adam-coupled-l2"}), "adam-coupled-l2"),
    Pitfall("no_warmup", frozenset({"no-warmup"}), "warmup", severities=frozenset({"warning"})),
    Pitfall("dead_layer", frozenset({"dead-layer"}), "dead-layer", named("fc2.weight")),
    # Warmup over the first 5 epochs of 20 steps: the jumps are at steps 20, 40, 60, 80.
    Pitfall("lr_jumps", frozenset({"lr-jumps"}), "lr-jumps", steps=(0, 100)),
    Pitfall("accumulation_not_divided", frozenset({"accumulation-loss-not-divided"}),
            "accumulation"),
    Pitfall("drop_path_no_residual", frozenset({"drop-path-no-residual"}), "drop-path",
            named("blocks.1.drop_path"), severities=frozenset({"error"})),
    Pitfall("ema_horizon", frozenset({"ema-horizon"}), "ema"),
    Pitfall("ema_not_updated", frozenset({"ema-not-updated"}), "ema"),
    Pitfall("eps_dominates", frozenset({"eps-dominates"}), "eps-dominates",
            named(*(f"{i}.{kind}" for i in (0, 2, 4) for kind in ("weight", "bias")))),
    Pitfall("nonfinite_weight", frozenset({"nonfinite-weight"}), "agent", named("fc2.weight"),
            steps=(60, 60), severities=frozenset({"error"})),
    # The norm leaves its early level within the first ~30 steps (checked in the script).
    Pitfall("exploding_gradient", frozenset({"exploding-gradient"}), "exploding-gradient",
            steps=(0, 35)),
    Pitfall("vanishing_gradient", frozenset({"vanishing-gradient", "gradient-spread"}),
            "vanishing-gradient"),
    Pitfall("no_gradient", frozenset({"no-gradient"}), "no-gradient",
            named("aux_head.weight", "aux_head.bias")),
    Pitfall("clipping_always", frozenset({"clipping-always"}), "clipping-always"),
    # Dead code, not a mistake that changes the training: info (the rule's docstring says why).
    Pitfall("clipping_never", frozenset({"clipping-never"}), "clipping-never",
            severities=frozenset({"info"})),
    # The same with the clip call in a helper the loop calls: read through the call.
    Pitfall("clipping_never_helper", frozenset({"clipping-never"}), "clipping-never",
            severities=frozenset({"info"})),
    # Every measured step was clipped against the scaled norm, from the first one.
    Pitfall("clip_before_unscale", frozenset({"clip-before-unscale"}), "clip-before-unscale",
            steps=(0, 2), severities=frozenset({"error"})),
    Pitfall("drop_path_order", frozenset({"drop-path-order"}), "drop-path",
            severities=frozenset({"info", "warning"})),
    Pitfall("loss_divergence", frozenset({"loss-divergence", "nonfinite-loss"}), "loss"),
    Pitfall("gradients_not_zeroed", frozenset({"gradients-not-zeroed"}), "gradients-not-zeroed",
            steps=(1, 1), severities=frozenset({"error"})),
    # Eval mode from the second epoch (step 40); the first due step after it is 40.
    Pitfall("training_in_eval_mode", frozenset({"training-in-eval-mode"}), "train-mode",
            steps=(40, 50)),
    # The first evaluation follows step 39; the next due step reads it (40).
    Pitfall("evaluation_in_train_mode", frozenset({"evaluation-in-train-mode"}), "eval-mode",
            steps=(39, 40)),
    Pitfall("lr_far_too_low", frozenset({"loss-stalled"}), "loss"),
    Pitfall("softmax_twice", frozenset({"cross-entropy-on-probabilities"}), "softmax-twice",
            severities=frozenset({"error"})),
    Pitfall("init_too_large", frozenset({"init-too-large"}), "init-scale",
            named("0.weight", "2.weight", "4.weight", "6.weight"), steps=(0, 0)),
    Pitfall("accumulation_not_applied", frozenset({"accumulation-not-applied"}), "accumulation"),
    Pitfall("ema_stale_batchnorm", frozenset({"ema-stale-batchnorm"}), "ema"),
    Pitfall("weight_decay_too_strong", frozenset({"weight-decay-too-strong"}),
            "weight-decay-strength"),
    # 0.9**131 < 1e-6: from about step 131 of 300 the LR is negligible against its peak.
    Pitfall("lr_decayed_to_zero", frozenset({"lr-zero-early"}), "lr-zero", steps=(125, 140)),
]  # fmt: skip


@pytest.mark.parametrize("pitfall", PITFALLS, ids=lambda p: p.script)
def test_pitfall_is_named(pitfall_server: LiveServer, pitfall: Pitfall) -> None:
    run_id = train(pitfall_server, pitfall.script)
    report = health(pitfall_server, run_id)
    why = explain(pitfall_server, run_id, report)

    found = [f for f in report["findings"] if f["check"] in pitfall.rules]
    assert found, f"{pitfall.script}: no {sorted(pitfall.rules)} finding\n{why}"
    assert any(f["severity"] in pitfall.severities for f in found), why
    if pitfall.layer is not None:
        assert any(pitfall.layer(f["layer"]) for f in found), f"wrong layer\n{why}"
    if pitfall.steps is not None:
        lo, hi = pitfall.steps
        assert any(f["step"] is not None and lo <= f["step"] <= hi for f in found), (
            f"step outside {pitfall.steps}\n{why}"
        )
    # One finding that satisfies all of it at once, not each part from a different finding.
    assert any(
        f["severity"] in pitfall.severities
        and (pitfall.layer is None or pitfall.layer(f["layer"]))
        and (pitfall.steps is None
             or (f["step"] is not None and pitfall.steps[0] <= f["step"] <= pitfall.steps[1]))
        for f in found
    ), why  # fmt: skip

    checks = check_list_is_well_formed(report)
    assert pitfall.check in checks, f"no check {pitfall.check!r}\n{why}"
    assert checks[pitfall.check]["status"] == "ran", why
    assert checks[pitfall.check]["findings"] >= 1, why
