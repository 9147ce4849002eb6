"""Decoding what the REST API answers: non-finite tokens, timestamps."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

_TOKENS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def to_float(value: Any) -> float | None:
    """A JSON value column entry as a float: ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` become
    the non-finite floats they stand for; None stays None."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return _TOKENS[value]
        except KeyError:
            raise ValueError(f"{value!r} is not a number or a non-finite token") from None
    return float(value)


def to_floats(values: list[Any]) -> list[float]:
    """A whole value column as floats (the fast path skips entries that already are)."""
    out = list(values)
    for i, value in enumerate(out):
        if type(value) is not float:
            out[i] = to_float(value)
    return out


def to_datetime(value: str | None) -> datetime | None:
    """An ISO 8601 timestamp of the API (UTC) as an aware datetime; None stays None."""
    return datetime.fromisoformat(value) if value else None
