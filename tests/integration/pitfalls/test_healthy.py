"""Healthy recipes, attached the default way, must raise nothing at warning or above."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import LiveServer
from tests.integration.pitfalls._health import check_list_is_well_formed, explain, health, train

# The checks each recipe gives something to check: they must have run, not been skipped.
HEALTHY: list[tuple[str, dict[str, Any], set[str]]] = [
    ("healthy_vit", {}, {"warmup", "ema", "drop-path", "decay-on-norm-bias", "clipping-always",
                         "exploding-gradient", "nonfinite", "drop-path-eval"}),
    ("healthy_mlp", {}, {"accumulation", "clipping-always", "decay-on-norm-bias", "nonfinite"}),
    ("healthy_gpt", {}, {"warmup", "clipping-always", "decay-on-norm-bias", "nonfinite"}),
]  # fmt: skip


def assert_healthy(server: LiveServer, run_id: str, must_run: set[str]) -> None:
    report = health(server, run_id)
    why = explain(server, run_id, report)
    loud = [f for f in report["findings"] if f["severity"] in ("warning", "error")]
    assert not loud, f"a healthy run raised {[(f['check'], f['layer']) for f in loud]}\n{why}"
    checks = check_list_is_well_formed(report)
    ran = {id_ for id_, check in checks.items() if check["status"] == "ran"}
    assert must_run <= ran, f"checks that did not run: {sorted(must_run - ran)}\n{why}"


@pytest.mark.parametrize(("script", "kw", "must_run"), HEALTHY, ids=[h[0] for h in HEALTHY])
def test_healthy_recipe_raises_nothing(
    pitfall_server: LiveServer, script: str, kw: dict[str, Any], must_run: set[str]
) -> None:
    assert_healthy(pitfall_server, train(pitfall_server, script, **kw), must_run)


# SGD's run is in the slow set (`pytest -m slow`): 25 s on two cores for the same demo recipe.
@pytest.mark.parametrize("optimizer", ["adamw", pytest.param("sgd", marks=pytest.mark.slow)])
def test_demo_raises_nothing(pitfall_server: LiveServer, optimizer: str) -> None:
    """The demo's own recipe, at its default length (its EMA horizon needs the run's length)."""
    run_id = train(pitfall_server, "healthy_demo", optimizer=optimizer)
    must_run = {"warmup", "ema", "drop-path", "accumulation", "clipping-always", "nonfinite",
                "drop-path-eval", "batchnorm"}  # fmt: skip
    if optimizer == "sgd":
        must_run.discard("warmup")  # Adam's second moment: nothing to warm up for SGD
    assert_healthy(pitfall_server, run_id, must_run)
