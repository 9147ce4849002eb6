"""The health rules' vocabulary: findings, summaries, the run view they read, and the registry.

A rule is one function of a :class:`RunView` that yields :class:`Finding` objects, registered with
:func:`rule`. A rule that cannot judge this run (no EMA, not an Adam-family optimizer) raises
:class:`NotApplicable` with the reason, which ``/health`` lists beside the checks that ran.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
from numpy.typing import NDArray

Severity = Literal["error", "warning", "info"]
SEVERITIES: tuple[Severity, ...] = ("error", "warning", "info")


def json_safe(value: Any) -> Any:
    """Evidence as strict JSON: numpy scalars as Python numbers, non-finite floats as tokens."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


@dataclass(frozen=True)
class Finding:
    """One health finding: what, where (``step``, ``layer``), why it matters, what to try."""

    check: str
    severity: Severity
    title: str
    why: str
    remedy: str
    step: int | None = None
    layer: str | None = None
    evidence: Mapping[str, Any] = field(default_factory=dict)
    source: Literal["server", "agent"] = "server"

    @property
    def detail(self) -> str:
        """Why and what to try in one paragraph (the form older clients read)."""
        return f"{self.why} {self.remedy}".strip()

    def as_dict(self) -> dict[str, Any]:
        """The finding as ``/health`` returns it."""
        return {
            "check": self.check,
            "severity": self.severity,
            "title": self.title,
            "detail": self.detail,
            "why": self.why,
            "remedy": self.remedy,
            "step": self.step,
            "layer": self.layer,
            "evidence": json_safe(dict(self.evidence)),
            "source": self.source,
        }


@dataclass(frozen=True)
class Summary:
    """The per-series summary the server keeps at ingest."""

    count: int
    last_step: int | None
    last_value: float | None
    first_nonfinite_step: int | None


class RunView(Protocol):
    """What the rules read: everything but points comes from the run row and summaries."""

    @property
    def status(self) -> str: ...

    @property
    def config(self) -> Mapping[str, Any]: ...

    @property
    def setup(self) -> Mapping[str, Any]:
        """The setup document (docs/diagnosis.md, section 1); empty when none was declared."""
        ...

    @property
    def agent_findings(self) -> Mapping[str, Mapping[str, Any]]:
        """Findings made inside the training process, keyed ``"<check>|<layer>"``."""
        ...

    @property
    def layers(self) -> Sequence[str]:
        """Parameter names in model order."""
        ...

    @property
    def ranks(self) -> Mapping[str, Mapping[str, Any]]:
        """A distributed run's ranks (``"0"``, ``"1"``, ...): each one's host and process."""
        ...

    @property
    def summaries(self) -> Mapping[str, Summary]: ...

    def series(self, name: str) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """Steps and values of a series (spike-preserving downsampling is fine)."""
        ...


class NotApplicable(Exception):  # noqa: N818 - reads as a verdict: raise NotApplicable(reason)
    """Raised by a rule that cannot judge this run; the message says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


RuleFn = Callable[[RunView], Iterable[Finding]]


@dataclass(frozen=True)
class Rule:
    """A registered check: its id and title as ``/health`` lists them, and the function."""

    id: str
    title: str
    fn: RuleFn

    def __call__(self, view: RunView) -> Iterable[Finding]:
        return self.fn(view)


RULES: list[Rule] = []


def rule(id: str, title: str) -> Callable[[RuleFn], Rule]:  # noqa: A002 - the check's id
    """Register a rule under ``id``; rules run in registration (import) order."""

    def register(fn: RuleFn) -> Rule:
        if any(r.id == id for r in RULES):
            raise ValueError(f"rule id {id!r} is registered twice")
        registered = Rule(id=id, title=title, fn=fn)
        RULES.append(registered)
        return registered

    return register


def finding(
    check: str,
    severity: Severity,
    title: str,
    *,
    why: str,
    remedy: str,
    step: int | None = None,
    layer: str | None = None,
    **evidence: Any,
) -> Finding:
    """A server finding with its evidence as keyword arguments."""
    return Finding(
        check=check,
        severity=severity,
        title=title,
        why=why,
        remedy=remedy,
        step=step,
        layer=layer,
        evidence=evidence,
    )
