"""Health findings of a run (``GET /runs/{id}/health``)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class Finding:
    """One health finding: what went wrong, where and when, why it matters, what to try.

    ``severity`` is ``"error"``, ``"warning"`` or ``"info"``; ``source`` is ``"server"`` or
    ``"agent"`` (found inside the training process); ``evidence`` holds the numbers behind it.
    """

    check: str
    severity: str
    title: str
    detail: str = ""
    why: str = ""
    remedy: str = ""
    step: int | None = None
    layer: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    source: str = "server"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Finding:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known and v is not None})
