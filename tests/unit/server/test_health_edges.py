"""Health rules at the edges of their inputs: the smallest accumulation, malformed stored
findings, thresholds met exactly. Each test holds a line a mutation of the rule got past."""

from __future__ import annotations

import numpy as np
import pytest

from tests.unit.server.health_view import Run, adam_setup, check, healthy_run, skipped
from trickscope_server.services.health import RULES, Finding, NotApplicable, Rule, diagnose


def test_two_micro_batches_with_an_undivided_loss_are_reported() -> None:
    run = healthy_run()
    run.values("accum/backward_passes")[:] = 2.0
    run.add("accum/loss_scale", np.full(400, 1.0))
    (found,) = check(run, "accumulation")
    assert (found.check, found.evidence["backward_passes"]) == ("accumulation-loss-not-divided", 2)
    run.values("accum/loss_scale")[:] = 0.5
    assert check(run, "accumulation") == []
    run.values("accum/backward_passes")[:] = 1.0
    assert skipped(run, "accumulation") == "one backward pass per optimizer step: no accumulation"


def test_accumulation_declared_in_the_config_but_one_pass_per_step_is_not_applied() -> None:
    run = healthy_run()
    run.config = {"trainer": {"gradient_accumulation_steps": 4}}  # nested, as integrations do
    (found,) = check(run, "accumulation")
    assert (found.check, found.evidence["declared"]) == ("accumulation-not-applied", 4)
    run.config = {"accum_steps": 1}
    assert skipped(run, "accumulation") == "one backward pass per optimizer step: no accumulation"
    run.config = {"accum_steps": 4}
    run.values("accum/backward_passes")[:] = 4.0  # applied: judged as accumulation
    run.add("accum/loss_scale", np.full(400, 0.25))
    assert check(run, "accumulation") == []


def test_malformed_stored_agent_findings_are_dropped() -> None:
    run = healthy_run()
    good = {"check": "nonfinite-weight", "severity": "error", "title": "t", "why": "w",
            "remedy": "r", "step": 3, "layer": "head.weight",
            "evidence": {"value": "NaN"}}  # fmt: skip
    run.agent_findings = {
        "a": "not a finding",
        "b": {**good, "severity": "fatal"},
        "c": {**good, "step": True, "layer": 5, "evidence": ["x"]},
        "d": good,
    }
    found = check(run, "agent")
    assert [(f.step, f.layer, dict(f.evidence)) for f in found] == [
        (None, None, {}), (3, "head.weight", {"value": "NaN"})
    ]  # fmt: skip


def _growth_run(passes: list[float], norms: list[float]) -> Run:
    run = healthy_run()
    steps = list(range(len(passes)))
    run.add("accum/backward_passes", passes, steps).add("grad_norm/total", norms, steps)
    return run


def test_norm_growth_is_judged_from_six_common_steps_and_a_median_of_one_pass() -> None:
    # Mostly one pass, now and then two: the median says 1, the norms still grow with N.
    passes = [1.0, 1.0, 1.0, 2.0, 2.0, 1.0]
    run = _growth_run(passes, [0.3 * p for p in passes])
    run.add("accum/loss_scale", [1.0] * 6)  # measured: one pass's scale cannot tell
    (found,) = check(run, "accumulation")
    assert found.evidence["slope"] == pytest.approx(1.0)
    five = _growth_run(passes[:5], [0.3 * p for p in passes[:5]])
    assert check(five, "accumulation") == []  # too few steps to fit a slope to


def test_a_total_norm_of_zero_throughout_is_not_clipping() -> None:
    run = healthy_run()
    del run.columns["clip/observed"]
    run.values("grad_norm/total")[:] = 0.0
    assert check(run, "clipping-always") == []


def test_ten_pinned_norms_at_the_end_are_enough_to_infer_clipping() -> None:
    run = healthy_run(46)  # the last fifth of steps 0..45 holds 10 samples
    del run.columns["clip/observed"]
    run.values("grad_norm/total")[:] = 1.0
    (found,) = check(run, "clipping-always")
    assert found.evidence["inferred"] is True
    del run.columns["grad_norm/total"]
    run.add("grad_norm/total", [1.0] * 41)  # 9 at the end
    assert "too few" in (skipped(run, "clipping-always") or "")


def test_three_dead_samples_are_enough_and_a_two_dimensional_parameter_is_the_one_named() -> None:
    run = Run(layers=["proj.b", "proj.w"])  # the bias first: the matrix is named all the same
    run.setup = {"params": [{"name": "proj.w", "shape": [4, 4]}, {"name": "proj.b", "shape": [4]}]}
    for layer in run.layers:
        run.add(f"grad_zero_frac/{layer}", [1.0, 1.0, 1.0])
    (found,) = check(run, "dead-layer")
    assert (found.layer, found.step) == ("proj.w", 0)


def test_a_straggler_check_on_zero_step_times_runs_and_finds_nothing() -> None:
    run = healthy_run(20)
    for rank, wait in ((0, 0.01), (1, 0.01), (2, 0.5)):
        run.add(f"rank/{rank}/data_time", [wait] * 20).add(f"rank/{rank}/step_time", [0.0] * 20)
    assert check(run, "stragglers") == []


def test_drop_path_rates_falling_at_the_last_block_are_named() -> None:
    run = healthy_run()
    run.setup["drop_path"] = [
        {"module": f"b.{i}.dp", "class": "DropPath", "rate": rate, "parent": f"b.{i}"}
        for i, rate in enumerate([0.0, 0.1, 0.2, 0.1])
    ]
    (found,) = check(run, "drop-path")
    assert (found.check, found.layer) == ("drop-path-order", "b.3")


def test_an_ema_decay_of_one_is_no_horizon_and_breaks_nothing() -> None:
    run = healthy_run()
    run.setup["ema"]["decay"] = 1.0
    run.values("ema/decay")[:] = 1.0
    assert check(run, "ema") == []


def test_an_ema_over_half_a_percent_behind_the_raw_model_is_worse() -> None:
    run = healthy_run()
    run.values("eval/acc_ema")[-1] = 0.944  # raw 0.95: 0.6% behind, over the 0.5% margin
    assert [f.check for f in check(run, "ema")] == ["ema-worse"]
    run.values("eval/acc_ema")[-1] = 0.947  # 0.3% behind: noise between evaluations
    assert check(run, "ema") == []


def test_findings_are_ordered_most_severe_first_then_by_step() -> None:
    run = healthy_run()
    run.values("loss/train")[250] = 50.0  # info at step 250
    run.values("lr/group0")[340:] = 0.0  # a warning at step 340
    run.values("loss/train")[360:] = np.nan  # an error at a later step, 360
    run.values("update_ratio/head.weight")[:] = 0.5  # a warning without a step
    found = [(f.severity, f.check, f.step) for f in diagnose(run).findings]
    assert found == [
        ("error", "nonfinite-loss", 360),
        ("warning", "lr-zero-early", 340),
        ("warning", "update-ratio-high", None),
        ("info", "loss-spike", 250),
    ]


def test_a_rule_that_fails_or_cannot_judge_counts_no_findings_and_hides_none() -> None:
    def broken(view: object) -> list[Finding]:
        raise ZeroDivisionError("a bug in one rule")

    def not_applicable(view: object) -> list[Finding]:
        raise NotApplicable("nothing to judge")

    rules = [Rule("broken", "B", broken), Rule("na", "N", not_applicable)]
    rules += [r for r in RULES if r.id == "nonfinite"]
    run = healthy_run()
    run.values("loss/train")[300:] = np.nan
    diagnosis = diagnose(run, rules=rules)
    assert [(c.id, c.status, c.reason, c.findings) for c in diagnosis.checks] == [
        ("broken", "skipped", "the check failed", 0),
        ("na", "skipped", "nothing to judge", 0),
        ("nonfinite", "ran", None, 1),
    ]
    assert [f.check for f in diagnosis.findings] == ["nonfinite-loss"]


def test_decay_on_norm_gains_is_a_warning_unless_it_is_a_small_coupled_sgd_l2() -> None:
    norm = [("n.weight", "norm")]
    adam_l2 = adam_setup(norm, weight_decay=0.1, decoupled=False, cls="Adam")
    small_decoupled_sgd = adam_setup(norm, weight_decay=1e-4, cls="SGDW", family="sgd")
    for setup in (adam_l2, small_decoupled_sgd):
        (found,) = check(Run(setup=setup), "decay-on-norm-bias")
        assert found.severity == "warning", setup["optimizer"]["class"]


def test_update_ratios_on_the_band_edges_are_inside_it() -> None:
    for median in (1e-5, 1e-1):
        run = healthy_run()
        run.values("update_ratio/head.weight")[:] = median
        assert check(run, "update-ratio") == [], median
