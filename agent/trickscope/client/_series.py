"""Series summaries and the point columns read back from the server."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from trickscope.client._values import to_float


@dataclass(frozen=True)
class SeriesSummary:
    """One series of a run and its summary (``GET /runs/{id}/series``).

    ``min_value`` and ``max_value`` are over finite values; ``first_nonfinite_step`` is the first
    step whose value was NaN or ±Inf (None when every value was finite).
    """

    name: str
    count: int
    first_step: int | None
    last_step: int | None
    last_value: float | None
    min_value: float | None
    max_value: float | None
    first_nonfinite_step: int | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SeriesSummary:
        return cls(
            name=str(data["name"]),
            count=int(data.get("count") or 0),
            first_step=data.get("first_step"),
            last_step=data.get("last_step"),
            last_value=to_float(data.get("last_value")),
            min_value=to_float(data.get("min_value")),
            max_value=to_float(data.get("max_value")),
            first_nonfinite_step=data.get("first_nonfinite_step"),
        )

    def count_in(self, start: int | None, end: int | None) -> float:
        """About how many points lie in [start, end], assuming they are spread evenly."""
        if self.first_step is None or self.last_step is None or not self.count:
            return 0.0
        lo = self.first_step if start is None else max(start, self.first_step)
        hi = self.last_step if end is None else min(end, self.last_step)
        if hi < lo:
            return 0.0
        width = self.last_step - self.first_step
        return float(self.count) if width == 0 else self.count * (hi - lo + 1) / (width + 1)


@dataclass
class Columns:
    """One series' points, sorted by step: lists, or numpy arrays when read from Parquet."""

    step: Sequence[int]
    value: Sequence[float]
    wall_time: Sequence[float] | None = None

    def __len__(self) -> int:
        return len(self.step)


def is_layer_series(name: str, layers: set[str]) -> bool:
    """Whether ``name`` is a per-layer statistic (``<stat>/<parameter name>``) of these layers."""
    at = name.find("/")
    while at > 0:
        if name[at + 1 :] in layers:
            return True
        at = name.find("/", at + 1)
    return False
