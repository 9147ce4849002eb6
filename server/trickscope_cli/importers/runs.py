"""A run read from another tool's logs, before it is uploaded."""

from __future__ import annotations

import hashlib
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from trickscope_cli.importers.histograms import Buckets


@dataclass
class Series:
    """Points of one scalar series in the order they were logged (packed, 24 bytes a point)."""

    steps: array[int] = field(default_factory=lambda: array("q"))
    values: array[float] = field(default_factory=lambda: array("d"))
    times: array[float] = field(default_factory=lambda: array("d"))

    def append(self, step: int, value: float, wall_time: float) -> None:
        self.steps.append(step)
        self.values.append(value)
        self.times.append(wall_time)

    def __len__(self) -> int:
        return len(self.steps)


@dataclass
class ImportedRun:
    """What one run of another tool holds, in trickscope's terms.

    ``key`` names the run inside its source (TensorBoard: the folder's path relative to the
    logdir) and ``origin`` fingerprints it; with the project they make the run id, so that
    importing the same logs again updates the same run.
    """

    key: str
    origin: str
    config: dict[str, Any] = field(default_factory=dict)
    system: dict[str, Any] = field(default_factory=dict)
    scalars: dict[str, Series] = field(default_factory=dict)
    histograms: dict[str, list[Buckets]] = field(default_factory=dict)
    skipped: Counter[str] = field(default_factory=Counter)  # what was not imported, by kind
    started_at: float | None = None
    ended_at: float | None = None

    def saw(self, wall_time: float) -> None:
        """Widen the run's time span to include ``wall_time``."""
        if self.started_at is None or wall_time < self.started_at:
            self.started_at = wall_time
        if self.ended_at is None or wall_time > self.ended_at:
            self.ended_at = wall_time

    @property
    def points(self) -> int:
        return sum(len(series) for series in self.scalars.values())

    @property
    def histogram_count(self) -> int:
        return sum(len(rows) for rows in self.histograms.values())


def run_id(source: str, project: str, key: str, origin: str) -> str:
    """A run id that the same logs, imported into the same project, always get.

    ``source`` is a short prefix (``tb``); the id is it, ``-`` and 32 hex digits of a SHA-256,
    inside the server's id pattern.
    """
    digest = hashlib.sha256("\0".join((source, project, key, origin)).encode()).hexdigest()
    return f"{source}-{digest[:32]}"
