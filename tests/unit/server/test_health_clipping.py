"""Clipping that never acts, clipping before ``GradScaler.unscale_``, and how those read beside
clipping on every step."""

from __future__ import annotations

import numpy as np

from tests.unit.server.health_view import Run, healthy_run
from trickscope_server.services.health import RULES, diagnose

STEPS = 400


def _rules(*ids: str) -> list:
    return [r for r in RULES if r.id in ids]


def _clipped(threshold: float, steps: int = STEPS, clipped_at: int | None = None) -> Run:
    """clip_grad_norm_ at ``threshold`` over pre-clip norms of 0.2-0.22, clipped at most once."""
    run = healthy_run(steps)
    run.values("clip/observed")[:] = 0.0
    if clipped_at is not None:
        run.values("clip/observed")[clipped_at] = 1.0
    run.add("grad_norm/total_preclip", run.values("grad_norm/total").copy())
    run.add("clip/threshold", np.full(steps, threshold))
    return run


def test_a_threshold_far_above_every_norm_is_named_with_its_numbers() -> None:
    (found,) = diagnose(_clipped(1e4), rules=_rules("clipping-never")).findings
    assert (found.check, found.severity, found.step) == ("clipping-never", "info", STEPS - 1)
    largest = found.evidence["largest_preclip"]
    assert 0.2 < largest <= 0.22 and found.evidence["threshold"] == 1e4
    assert f"{1e4 / largest:,.0f}x" in found.title and "400 steps" in found.title
    assert "max_norm" in found.remedy


def test_a_safety_net_a_few_times_above_the_norm_is_not_dead_code() -> None:
    for threshold in (1.0, 5.0, 20.0):  # up to ~90x the largest norm
        diagnosis = diagnose(_clipped(threshold), rules=_rules("clipping-never"))
        assert diagnosis.findings == [] and diagnosis.checks[0].status == "ran"


def test_a_clip_that_acted_once_or_a_short_run_is_not_judged_never() -> None:
    assert diagnose(_clipped(1e4, clipped_at=10), rules=_rules("clipping-never")).findings == []
    short = diagnose(_clipped(1e4, steps=50), rules=_rules("clipping-never"))
    assert (short.findings, short.checks[0].status) == ([], "skipped")
    assert "fewer than 100" in (short.checks[0].reason or "")


def test_the_clip_tricks_series_are_read_too() -> None:
    run = healthy_run()
    del run.columns["clip/observed"]
    run.add("clip/clipped", np.zeros(STEPS))
    run.add("clip/pre_norm", np.full(STEPS, 0.5))
    run.add("clip/threshold", np.full(STEPS, 1e3))
    (found,) = diagnose(run, rules=_rules("clipping-never")).findings
    assert found.evidence["series"] == "clip/pre_norm" and found.evidence["largest_preclip"] == 0.5


def _scaled_clip(before_unscale: float) -> Run:
    """Clipping at 1.0 on every step under a GradScaler at 65536."""
    run = _clipped(1.0)
    run.values("clip/observed")[:] = 1.0
    run.add("amp/scale", np.full(STEPS, 65536.0))
    run.add("clip/before_unscale", np.full(STEPS, before_unscale), np.arange(STEPS))
    return run


def test_a_clip_before_unscale_is_an_error_and_clipping_always_defers_to_it() -> None:
    diagnosis = diagnose(_scaled_clip(1.0), rules=_rules("clipping-always", "clip-before-unscale"))
    (found,) = diagnosis.findings
    assert (found.check, found.severity, found.step) == ("clip-before-unscale", "error", 0)
    assert "scaler.unscale_(optimizer)" in found.remedy
    assert found.remedy.index("unscale_") < found.remedy.index("clip_grad_norm_")
    assert "65536" in found.why and "clipping-always" in found.why
    assert "1.53e-05" in found.why  # max_norm / scale: what each step was cut to
    assert {c.id: c.status for c in diagnosis.checks} == {
        "clipping-always": "ran",
        "clip-before-unscale": "ran",
    }


def test_clipping_after_unscale_on_every_step_is_the_threshold_again() -> None:
    diagnosis = diagnose(_scaled_clip(0.0), rules=_rules("clipping-always", "clip-before-unscale"))
    assert [f.check for f in diagnosis.findings] == ["clipping-always"]


def test_without_a_scaler_measurement_clip_before_unscale_is_skipped_with_a_reason() -> None:
    (status,) = diagnose(healthy_run(), rules=_rules("clip-before-unscale")).checks
    assert status.status == "skipped" and "GradScaler" in (status.reason or "")
