"""The one interface the tricks report through, and the findings they return.

``trickscope.Run.log`` satisfies :class:`MetricSink`; the tricks import nothing else from the
agent, so they work (and are tested) with any object that has a matching ``log``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

logger = logging.getLogger("trickscope")

Metric = float | torch.Tensor
"""A Python number or a 0-d tensor; tensors are never synced by the sink."""


@runtime_checkable
class MetricSink(Protocol):
    """Anything with ``log(metrics, step)``, e.g. ``trickscope.Run``."""

    def log(self, metrics: dict[str, Metric], step: int | None = None) -> None: ...


@dataclass(frozen=True)
class Finding:
    """One health-check result: what was seen, where, and what to try."""

    check: str
    message: str
    layer: str | None = None
    step: int | None = None


def report(run: MetricSink | None, metrics: dict[str, Metric], step: int | None) -> None:
    """Send ``metrics`` to ``run`` if there is one; never raises into the training loop.

    A run that says ``reports_tricks = False`` (rank ``r > 0`` of a distributed job, where every
    trick reports what rank 0 does) is skipped.
    """
    if run is None or not metrics or not getattr(run, "reports_tricks", True):
        return
    try:
        run.log(metrics, step=step)
    except Exception as exc:  # the training loop must survive a broken sink (STYLE §7)
        logger.warning("trickscope: a trick could not report (%s: %s)", type(exc).__name__, exc)


def warn_findings(findings: list[Finding], seen: set[str]) -> None:
    """Log each finding's check once per ``seen`` set."""
    for finding in findings:
        key = f"{finding.check}:{finding.layer}"
        if key not in seen:
            seen.add(key)
            logger.warning("trickscope: %s", finding.message)
