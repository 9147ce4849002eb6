"""Each pitfall really happens in plain PyTorch: every script asserts its own evidence (the NaN,
the dead layer, the LR jumps, ...) and runs here with the agent disabled, no server."""

from __future__ import annotations

import importlib

import pytest

from tests.integration.pitfalls.test_healthy import HEALTHY
from tests.integration.pitfalls.test_pitfalls import PITFALLS

SCRIPTS = [p.script for p in PITFALLS] + [h[0] for h in HEALTHY]


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_shows_its_pitfall_without_the_agent(script: str) -> None:
    module = importlib.import_module(f"tests.integration.pitfalls.scripts.{script}")
    module.train("http://127.0.0.1:9", disabled=True)
