"""The project's own demo (``trickscope demo``), one of its two runs, as a user starts it."""

from __future__ import annotations

from typing import Any

from trickscope.demo import DemoConfig, run_demo


def train(url: str, optimizer: str = "adamw", epochs: int = 15, **kw: Any) -> str:
    """``epochs`` defaults to the demo's own; fewer would make its EMA horizon (0.99: 100 steps)
    outlast the run, which the health rules rightly report."""
    run_url, result = run_demo(url, DemoConfig(optimizer=optimizer, epochs=epochs, **kw))
    assert result["acc_ema"] > 0.8, result
    return run_url.rsplit("/", 1)[1]
