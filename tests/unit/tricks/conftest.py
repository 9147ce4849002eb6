"""Fixtures for the training-trick tests: a sink that records what the tricks report."""

from __future__ import annotations

from typing import Any

import pytest
import torch


class RecordingSink:
    """Stores every ``log`` call; this is the sink interface the tricks report through."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, Any], int | None]] = []

    def log(self, metrics: dict[str, float | torch.Tensor], step: int | None = None) -> None:
        self.calls.append((dict(metrics), step))

    def series(self, key: str) -> list[tuple[int | None, Any]]:
        return [(step, m[key]) for m, step in self.calls if key in m]

    def last(self, key: str) -> Any:
        return self.series(key)[-1][1]

    def keys(self) -> set[str]:
        return {k for m, _ in self.calls for k in m}


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
