"""Configuration known only after init (the tricks' descriptions) reaches the server."""

from __future__ import annotations

from typing import Any

import pytest

import trickscope


def test_update_config_merges_and_resends_the_run(capture: Any, settings: dict[str, Any]) -> None:
    run = trickscope.init(project="p", url=capture.url, config={"lr": 0.1, "seed": 1}, **settings)
    run.update_config({"tricks": {"ema": {"decay": 0.99}}, "seed": 2})
    run.finish()
    creates = [body for method, path, body in capture.captured.snapshot() if method == "PUT"]
    assert creates[0]["config"] == {"lr": 0.1, "seed": 1}
    assert creates[-1]["config"] == {"lr": 0.1, "seed": 2, "tricks": {"ema": {"decay": 0.99}}}
    assert creates[-1]["started_at"] == creates[0]["started_at"]


def test_update_config_rejects_a_non_mapping(capture: Any, settings: dict[str, Any]) -> None:
    run = trickscope.init(project="p", url=capture.url, **settings)
    with pytest.raises(TypeError, match="values must be a mapping"):
        run.update_config([("a", 1)])  # type: ignore[arg-type]
    run.finish()
