"""The BatchNorm batch-size rule and the eval-mode DropPath rule, beyond their healthy/broken
pair: severities by size, the micro-batch wording, the median over due steps, skips."""

from __future__ import annotations

import numpy as np
import pytest

from tests.unit.server.health_view import Run, check, healthy_run, skipped

DUE = np.arange(0, 400, 10)


def _bn(sizes: object, passes: float = 1.0, module: str = "stem.1") -> Run:
    run = healthy_run()
    run.values("accum/backward_passes")[:] = passes
    run.add(f"bn/batch_size/{module}", np.broadcast_to(np.asarray(sizes, float), DUE.shape), DUE)
    return run


@pytest.mark.parametrize(
    ("size", "severity"), [(1, "warning"), (4, "warning"), (5, "info"), (15, "info")]
)
def test_severity_follows_the_samples_per_forward(size: int, severity: str) -> None:
    (found,) = check(_bn(size), "batchnorm")
    assert (found.check, found.severity, found.layer, found.step) == (
        "batchnorm-small-batch", severity, "stem.1", 0
    )  # fmt: skip
    assert "micro-batch" not in found.why


@pytest.mark.parametrize("size", [16, 32, 256])
def test_usual_batches_raise_nothing(size: int) -> None:
    assert check(_bn(size), "batchnorm") == []


def test_under_accumulation_the_micro_batch_is_named() -> None:
    (found,) = check(_bn(2, passes=16), "batchnorm")
    assert found.severity == "warning"
    assert found.title == "BatchNorm in stem.1 trains on 2-sample micro-batches"
    assert "per micro-batch" in found.why and "32 samples" in found.why
    assert dict(found.evidence) == {
        "batch_size": 2.0, "backward_passes": 16.0, "accumulated_batch": 32.0
    }  # fmt: skip


def test_a_short_last_batch_on_a_few_due_steps_is_no_pattern() -> None:
    sizes = np.full(DUE.shape, 32.0)
    sizes[::8] = 3.0  # the epoch's last batch landing on a due step now and then
    assert check(_bn(sizes), "batchnorm") == []


def test_the_module_with_the_smallest_batches_is_named() -> None:
    run = _bn(32, module="stem.1")
    run.add("bn/batch_size/head.bn", np.full(DUE.shape, 4.0), DUE)
    (found,) = check(run, "batchnorm")
    assert (found.layer, found.evidence["batch_size"]) == ("head.bn", 4.0)


def test_without_batchnorm_the_rule_says_why_it_did_not_run() -> None:
    assert skipped(healthy_run(), "batchnorm") == (
        "no BatchNorm layer was seen training with batch statistics"
    )


def test_the_first_drop_path_changing_its_input_in_eval_is_an_error() -> None:
    run = healthy_run()
    for i, shares in enumerate([[0.0, 0.0], [0.0, 0.5], [1.0, 1.0]]):
        run.add(f"drop_path/eval_changed/blocks.{i}.drop_path", shares, [99, 199])
    (found,) = check(run, "drop-path-eval")
    assert (found.check, found.severity, found.layer, found.step) == (
        "drop-path-in-eval", "error", "blocks.1.drop_path", 199
    )  # fmt: skip
    assert found.evidence["modules"] == ["blocks.1.drop_path", "blocks.2.drop_path"]


def test_drop_path_eval_is_skipped_without_an_evaluation() -> None:
    assert skipped(healthy_run(), "drop-path-eval") == "no DropPath module was seen in eval mode"
