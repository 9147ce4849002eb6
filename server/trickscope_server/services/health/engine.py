"""Run every rule over a view: the findings, most severe first, and what each check did."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

from trickscope_server.services.health.model import RULES, Finding, NotApplicable, Rule, RunView

log = logging.getLogger("trickscope_server")

_SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}


@dataclass(frozen=True)
class CheckStatus:
    """One check as ``/health`` lists it: ran (with its finding count) or skipped (and why)."""

    id: str
    title: str
    status: str  # "ran" | "skipped"
    reason: str | None
    findings: int

    def as_dict(self) -> dict[str, object]:
        """The check as ``/health`` returns it."""
        return {
            "id": self.id,
            "title": self.title,
            "status": self.status,
            "reason": self.reason,
            "findings": self.findings,
        }


@dataclass(frozen=True)
class Diagnosis:
    """Every finding (most severe first, then by step) and the status of every check."""

    findings: list[Finding]
    checks: list[CheckStatus]


def sort_findings(findings: list[Finding]) -> list[Finding]:
    """Most severe first, then by step (findings without a step last)."""
    return sorted(
        findings,
        key=lambda f: (_SEVERITY_ORDER[f.severity], f.step if f.step is not None else math.inf),
    )


def diagnose(view: RunView, rules: Sequence[Rule] | None = None) -> Diagnosis:
    """Run ``rules`` (every registered rule by default) over ``view``."""
    findings: list[Finding] = []
    checks: list[CheckStatus] = []
    for check in RULES if rules is None else rules:
        try:
            found = list(check(view))
        except NotApplicable as skipped:
            checks.append(CheckStatus(check.id, check.title, "skipped", skipped.reason, 0))
            continue
        except Exception:
            # One broken rule must not hide the others' findings; the traceback goes to the log.
            log.exception("health check %s failed", check.id)
            checks.append(CheckStatus(check.id, check.title, "skipped", "the check failed", 0))
            continue
        findings += found
        checks.append(CheckStatus(check.id, check.title, "ran", None, len(found)))
    return Diagnosis(findings=sort_findings(findings), checks=checks)
