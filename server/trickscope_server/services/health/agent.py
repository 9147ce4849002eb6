"""Findings made inside the training process, returned beside the server's own."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from trickscope_server.services.health.model import (
    SEVERITIES,
    Finding,
    NotApplicable,
    RunView,
    rule,
)


def agent_findings(view: RunView) -> list[Finding]:
    """The run's stored agent findings as :class:`Finding` objects (malformed entries dropped)."""
    out = []
    for stored in (view.agent_findings or {}).values():
        if not isinstance(stored, Mapping) or stored.get("severity") not in SEVERITIES:
            continue
        step, layer, evidence = stored.get("step"), stored.get("layer"), stored.get("evidence")
        out.append(
            Finding(
                check=str(stored.get("check", "")),
                severity=stored["severity"],
                title=str(stored.get("title", "")),
                why=str(stored.get("why", "")),
                remedy=str(stored.get("remedy", "")),
                step=step if isinstance(step, int) and not isinstance(step, bool) else None,
                layer=layer if isinstance(layer, str) else None,
                evidence=_plain(evidence),
                source="agent",
            )
        )
    return out


def _plain(evidence: Any) -> dict[str, Any]:
    return dict(evidence) if isinstance(evidence, Mapping) else {}


@rule("agent", "Checks made inside the training process")
def agent(view: RunView) -> Iterable[Finding]:
    """The agent's own findings (the per-step non-finite check), as it sent them."""
    found = agent_findings(view)
    if not found and not view.setup:
        raise NotApplicable("the agent declared no setup: run.watch was not used")
    return found
