"""Conversions shared by the services: times, packed columns, JSON-safe values."""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timezone
from typing import Any

import numpy as np
from numpy.typing import NDArray

from trickscope_server.errors import InvalidPayloadError
from trickscope_server.storage import RunRow
from trickscope_server.storage.runs import StoredSeries
from trickscope_wire import finite_or_token

I64 = np.dtype("<i8")
F64 = np.dtype("<f8")


def iso(ts: float | None) -> str | None:
    """Unix seconds as an ISO 8601 UTC string; None for a time no datetime can show (a row
    stored before the server checked times reads as unknown rather than failing the read)."""
    if ts is None:
        return None
    try:
        return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat()
    except (OverflowError, ValueError, OSError):
        return None


# Stored JSON deeper than this reads as its JSON text: every encoder downstream has a depth bound.
_READ_DEPTH = 64


def readable(value: Any, depth: int = 0) -> Any:
    """Stored JSON made safe to answer with, whatever was stored before the input checks.

    Lone surrogates become U+FFFD (no UTF-8 encoding exists for them), non-finite floats their
    tokens, subtrees nested past ``_READ_DEPTH`` their (cut) JSON text. Clean values come back
    unchanged.
    """
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, float):
        return value if math.isfinite(value) else finite_or_token(value)
    if isinstance(value, dict | list):
        if depth >= _READ_DEPTH:
            return _cut(value)
        if isinstance(value, list):
            return [readable(item, depth + 1) for item in value]
        return {readable(str(k), depth + 1): readable(v, depth + 1) for k, v in value.items()}
    return value


_SURROGATE = re.compile("[\ud800-\udfff]")


def _cut(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=True, default=str)
    except (RecursionError, ValueError):
        return "<nested too deep to show>"
    return text if len(text) <= 1000 else text[:1000] + "…"


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


def stored_last_value(row: StoredSeries) -> float | str | None:
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


def run_out_dict(run: RunRow, series: list[StoredSeries]) -> dict[str, object]:
    """The ``RunOut`` fields of a run and its series summaries."""
    layers = set(run.layers)
    latest = {
        readable(s.name): stored_last_value(s)
        for s in series
        if s.count and not per_layer(s.name, layers)
    }
    return {
        "id": run.id,
        "project": readable(run.project),
        "name": readable(run.name),
        "status": run.status,
        "config": _object(run.config),
        "tags": _strings(run.tags),
        "system": _object(run.system),
        "layers": _strings(run.layers),
        "ranks": _object(run.ranks),
        "setup": _object(run.setup),
        "created_at": iso(run.created_at),
        "started_at": iso(run.started_at),
        "ended_at": iso(run.ended_at),
        "updated_at": iso(run.updated_at),
        "last_seen_at": iso(run.last_seen_at),
        "latest": latest,
    }


def _object(value: Any) -> dict[str, Any]:
    safe = readable(value)
    return safe if isinstance(safe, dict) else {}


def _strings(value: Any) -> list[str]:
    # The common case, a wide model's thousands of clean layer names: one scan, not one per name.
    if (
        isinstance(value, list)
        and all(type(item) is str for item in value)
        and not _SURROGATE.search("".join(value))
    ):
        return list(value)
    safe = readable(value)
    return [str(item) for item in safe] if isinstance(safe, list) else []


def check_budget(points: int, *, max_points: int) -> None:
    """Reject point budgets a chart cannot use."""
    if not 3 <= points <= max_points:
        raise InvalidPayloadError(
            f"points must be between 3 and {max_points}, got {points}",
            errors=[{"loc": ["query", "points"], "msg": f"must be between 3 and {max_points}"}],
        )
