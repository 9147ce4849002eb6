"""What the agent declares besides points: the training setup and its own health findings.

Both bodies come from a process we do not control, so every size is bounded before anything is
stored: a malformed or oversized body is a 4xx problem naming the field, never a 500.
"""

from __future__ import annotations

import re
import time
from typing import Any

import orjson

from trickscope_server.errors import InvalidPayloadError
from trickscope_server.schemas import RunOut
from trickscope_server.services.runs import check_wire_version, require_run, run_out
from trickscope_server.storage import Database
from trickscope_server.storage import runs as store
from trickscope_wire import AgentFinding, FindingsDeclare, SetupDeclare

MAX_SETUP_BYTES = 2 << 20  # a 10k-parameter model's names and shapes fit with room to spare
MAX_FINDINGS = 1000  # per request and per run, after merging
MAX_EVIDENCE_BYTES = 64 << 10
SEVERITIES = ("error", "warning", "info")
_CHECK = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_TEXT_LIMITS = {"title": 512, "why": 4000, "remedy": 4000}
_MAX_LAYER = 512
_MAX_STEP = (1 << 63) - 1


def _invalid(loc: list[str | int], msg: str, detail: str | None = None) -> InvalidPayloadError:
    return InvalidPayloadError(detail or f"{'.'.join(map(str, loc))} {msg}", errors=[
        {"loc": ["body", *loc], "msg": msg}
    ])  # fmt: skip


def _encoded_size(loc: list[str | int], value: object) -> int:
    try:
        return len(orjson.dumps(value))
    except (TypeError, orjson.JSONEncodeError):
        raise _invalid(loc, "must be JSON (string keys, finite numbers)") from None


def declare_setup(db: Database, *, run_id: str, payload: SetupDeclare) -> RunOut:
    """Store the training setup ``watch`` saw, replacing the previous one."""
    check_wire_version(payload.wire_version)
    if not isinstance(payload.setup, dict):
        raise _invalid(["setup"], "must be an object")
    size = _encoded_size(["setup"], payload.setup)
    if size > MAX_SETUP_BYTES:
        raise _invalid(
            ["setup"],
            f"must encode to at most {MAX_SETUP_BYTES} bytes",
            f"setup encodes to {size} bytes, over the limit of {MAX_SETUP_BYTES}: "
            "send parameter names once, not per group",
        )
    with db.transaction() as session:
        run = require_run(session, run_id, for_update=True)
        run.setup = payload.setup
        run.updated_at = run.last_seen_at = time.time()
        return run_out(session, run)


def _checked_finding(i: int, finding: AgentFinding) -> dict[str, Any]:
    """The stored form of one finding, or a 422 naming the first bad field."""
    loc: list[str | int] = ["findings", i]
    if not isinstance(finding.check, str) or not _CHECK.match(finding.check):
        raise _invalid([*loc, "check"], "must be a lowercase slug of 1 to 64 characters")
    if finding.severity not in SEVERITIES:
        raise _invalid(
            [*loc, "severity"],
            f"must be one of {', '.join(SEVERITIES)}",
            f"findings[{i}].severity must be one of {', '.join(SEVERITIES)}, "
            f"got {finding.severity!r:.40}",
        )
    for field, limit in _TEXT_LIMITS.items():
        text = getattr(finding, field)
        if not isinstance(text, str) or len(text) > limit or (field == "title" and not text):
            raise _invalid([*loc, field], f"must be text of at most {limit} characters")
    if finding.layer is not None and (
        not isinstance(finding.layer, str) or not 0 < len(finding.layer) <= _MAX_LAYER
    ):
        raise _invalid([*loc, "layer"], f"must be null or 1 to {_MAX_LAYER} characters")
    step = finding.step
    if step is not None and (
        isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= _MAX_STEP
    ):
        raise _invalid([*loc, "step"], "must be null or a non-negative integer step")
    if not isinstance(finding.evidence, dict):
        raise _invalid([*loc, "evidence"], "must be an object")
    if _encoded_size([*loc, "evidence"], finding.evidence) > MAX_EVIDENCE_BYTES:
        raise _invalid([*loc, "evidence"], f"must encode to at most {MAX_EVIDENCE_BYTES} bytes")
    return {
        "check": finding.check,
        "severity": finding.severity,
        "title": finding.title,
        "why": finding.why,
        "remedy": finding.remedy,
        "step": step,
        "layer": finding.layer,
        "evidence": finding.evidence,
    }


def finding_key(check: str, layer: str | None) -> str:
    """The merge key of an agent finding: one per (check, layer)."""
    return f"{check}|{layer or ''}"


def declare_findings(db: Database, *, run_id: str, payload: FindingsDeclare) -> RunOut:
    """Merge the agent's findings into the run's, one per (check, layer); a re-sent one replaces."""
    check_wire_version(payload.wire_version)
    if len(payload.findings) > MAX_FINDINGS:
        raise _invalid(["findings"], f"must hold at most {MAX_FINDINGS} findings")
    incoming = {
        finding_key(f["check"], f["layer"]): f
        for f in (_checked_finding(i, finding) for i, finding in enumerate(payload.findings))
    }
    with db.transaction() as session:
        # A read-modify-write: take the run's write lock before the read (as declare_rank does),
        # so two concurrent declarations cannot drop each other's findings.
        store.touch_run(session, run_id=run_id, now=time.time())
        run = require_run(session, run_id)
        merged = {**(run.agent_findings or {}), **incoming}  # a new dict: JSON change tracked
        if len(merged) > MAX_FINDINGS:
            raise _invalid(
                ["findings"],
                f"the run may hold at most {MAX_FINDINGS} agent findings",
                f"the run would hold {len(merged)} agent findings, over the limit of "
                f"{MAX_FINDINGS}: report each (check, layer) once",
            )
        run.agent_findings = merged
        return run_out(session, run)
