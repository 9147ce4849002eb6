"""The agent's own rule, the first non-finite weight or gradient: a healthy step (every norm
finite, however small or large) finds nothing, a broken one names its first layer."""

from __future__ import annotations

import math

import pytest

from trickscope.probes.finite import first_nonfinite

NAMES = ["embed.weight", "block.weight", "block.bias", "head.weight"]


@pytest.mark.parametrize("kind", ["weight", "gradient"])
def test_finite_norms_find_nothing(kind: str) -> None:
    assert first_nonfinite(kind, 5, NAMES, [0.0, 1e-30, 3.4e38, 1.7e308]) is None


@pytest.mark.parametrize(("kind", "check"), [("weight", "nonfinite-weight"),
                                             ("gradient", "nonfinite-gradient")])  # fmt: skip
def test_the_first_nonfinite_layer_in_model_order_is_named(kind: str, check: str) -> None:
    found = first_nonfinite(kind, 12, NAMES, [1.0, -math.inf, 2.0, math.nan])
    assert found is not None
    assert (found.check, found.severity, found.step, found.layer) == (
        check, "error", 12, "block.weight"
    )  # fmt: skip
    assert found.evidence["value"] == "-Infinity"
    assert (found.evidence["other_layers"], found.evidence["layers"]) == (
        1, ["block.weight", "head.weight"]
    )  # fmt: skip
    assert "block.weight" in found.title and "12" in found.title
