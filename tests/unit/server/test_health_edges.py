"""Health rules at the edges of their inputs: the smallest accumulation, malformed stored
findings, thresholds met exactly. Each test holds a line a mutation of the rule got past."""

from __future__ import annotations

import numpy as np
import pytest

from tests.unit.server.health_view import Run, check, healthy_run, skipped


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
    # Mostly one pass, now and then several: the median says 1, the norms still grow with N.
    passes = [1.0, 1.0, 1.0, 2.0, 4.0, 1.0]
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
