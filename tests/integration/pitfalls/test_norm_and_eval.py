"""BatchNorm on tiny micro-batches and DropPath dropping in eval, end to end: a script trains
with the default attach against a real server, and ``/health`` names the pitfall, or, for the
healthy variants, runs the check and finds nothing."""

from __future__ import annotations

from typing import Any

from tests.helpers import LiveServer
from tests.integration.pitfalls._health import check_list_is_well_formed, explain, health, train


def _report(server: LiveServer, script: str, **kw: Any) -> tuple[dict[str, Any], str]:
    run_id = train(server, script, **kw)
    report = health(server, run_id)
    return report, explain(server, run_id, report)


def test_batchnorm_on_two_sample_micro_batches_is_a_warning(pitfall_server: LiveServer) -> None:
    report, why = _report(pitfall_server, "batchnorm_micro_batch")
    found = [f for f in report["findings"] if f["check"] == "batchnorm-small-batch"]
    assert len(found) == 1, why
    (finding,) = found
    assert (finding["severity"], finding["layer"], finding["step"]) == ("warning", "1", 0), why
    assert finding["evidence"]["batch_size"] == 2 and finding["evidence"]["backward_passes"] == 16
    assert "per micro-batch" in finding["why"], why
    # The loss is divided by the accumulation count: that rule runs and stays quiet.
    checks = check_list_is_well_formed(report)
    assert (checks["accumulation"]["status"], checks["accumulation"]["findings"]) == ("ran", 0)


def test_frozen_batchnorm_on_the_same_micro_batches_raises_nothing(
    pitfall_server: LiveServer,
) -> None:
    report, why = _report(pitfall_server, "batchnorm_micro_batch", freeze=True)
    assert not [f for f in report["findings"] if f["check"] == "batchnorm-small-batch"], why
    checks = check_list_is_well_formed(report)
    assert checks["batchnorm"]["status"] == "skipped", why


def test_a_drop_path_dropping_in_eval_is_an_error_naming_it(pitfall_server: LiveServer) -> None:
    report, why = _report(pitfall_server, "drop_path_in_eval")
    found = [f for f in report["findings"] if f["check"] == "drop-path-in-eval"]
    assert len(found) == 1, why
    (finding,) = found
    # Evaluated after step 19: read with step 20's check vector.
    assert (finding["severity"], finding["layer"], finding["step"]) == (
        "error", "blocks.0.drop_path", 20
    ), why  # fmt: skip
    assert finding["evidence"]["modules"] == [f"blocks.{i}.drop_path" for i in range(3)], why


def test_a_healthy_batchnorm_mlp_with_drop_path_evaluated_raises_nothing(
    pitfall_server: LiveServer,
) -> None:
    report, why = _report(pitfall_server, "healthy_batchnorm")
    loud = [f for f in report["findings"] if f["severity"] in ("warning", "error")]
    assert not loud, why
    checks = check_list_is_well_formed(report)
    for check in ("batchnorm", "drop-path-eval", "drop-path"):
        assert (checks[check]["status"], checks[check]["findings"]) == ("ran", 0), why
