"""Conversions shared by the services: times, packed columns, JSON-safe values."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import numpy as np
from numpy.typing import NDArray

from trickscope_server.storage import RunRow, SeriesRow
from trickscope_wire import finite_or_token

I64 = np.dtype("<i8")
F64 = np.dtype("<f8")


def iso(ts: float | None) -> str | None:
    """Unix seconds as an ISO 8601 UTC string."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat()


def json_values(values: NDArray[np.float64]) -> list[float | str]:
    """A float column as a JSON list, non-finite values as tokens."""
    out: list[float | str] = values.tolist()
    for i in np.flatnonzero(~np.isfinite(values)).tolist():
        out[i] = finite_or_token(out[i])  # type: ignore[arg-type]
    return out


def concat(parts: list[bytes], dtype: np.dtype) -> NDArray:  # type: ignore[type-arg]
    """Packed little-endian columns joined into one array (a copy only when there are several)."""
    if len(parts) == 1:
        return np.frombuffer(parts[0], dtype=dtype)
    return np.frombuffer(b"".join(parts), dtype=dtype)


def stored_last_value(row: SeriesRow) -> float | str | None:
    """The series' last value as JSON; SQLite stores NaN as NULL, so NULL with points is NaN."""
    if row.last_value is None:
        return "NaN" if row.count else None
    return finite_or_token(row.last_value)


def per_layer(name: str, layers: set[str]) -> bool:
    """True when ``name`` is ``<stat>/<declared layer>``."""
    _, sep, rest = name.partition("/")
    return bool(sep) and rest in layers


def finite_or_none(value: float | None) -> float | None:
    """Summary min/max (over finite values) as JSON."""
    if value is None or not math.isfinite(value):
        return None
    return value


def run_out_dict(run: RunRow, series: list[SeriesRow]) -> dict[str, object]:
    """The ``RunOut`` fields of a run and its series summaries."""
    layers = set(run.layers)
    latest = {
        s.name: stored_last_value(s) for s in series if s.count and not per_layer(s.name, layers)
    }
    return {
        "id": run.id,
        "project": run.project,
        "name": run.name,
        "status": run.status,
        "config": run.config,
        "tags": run.tags,
        "system": run.system,
        "layers": run.layers,
        "ranks": run.ranks,
        "setup": run.setup or {},
        "created_at": iso(run.created_at),
        "started_at": iso(run.started_at),
        "ended_at": iso(run.ended_at),
        "updated_at": iso(run.updated_at),
        "latest": latest,
    }
