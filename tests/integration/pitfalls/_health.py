"""Reading a run's health, and what its agent sent, for assertions that explain themselves."""

from __future__ import annotations

import importlib
import json
import urllib.request
from typing import Any

from tests.helpers import LiveServer, wait_until

# Series the default attach sends beyond per-layer statistics (docs/diagnosis.md, section 2).
_PROBES = ("grad_norm/total", "clip/", "accum/", "sched/", "grad_dead_units/", "opt/eps_dominance/",
           "ema/", "drop_path/", "lr/")  # fmt: skip


_SUMMARY = ("name", "count", "last_value", "min_value", "max_value", "first_nonfinite_step")


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def train(server: LiveServer, script: str, **kw: Any) -> str:
    """Run ``scripts/<script>.py`` against ``server``; wait until the run is finished there."""
    module = importlib.import_module(f"tests.integration.pitfalls.scripts.{script}")
    run_id = module.train(server.url, **kw)
    wait_until(
        lambda: get_json(f"{server.url}/api/v1/runs/{run_id}")["status"] == "finished",
        timeout=30,
        what=f"run {run_id} finished",
    )
    return run_id


def health(server: LiveServer, run_id: str) -> dict[str, Any]:
    return get_json(f"{server.url}/api/v1/runs/{run_id}/health")


def explain(server: LiveServer, run_id: str, report: dict[str, Any]) -> str:
    """Findings, checks, the setup document and the probe series' summaries, for a failure."""
    run = get_json(f"{server.url}/api/v1/runs/{run_id}")
    series = get_json(f"{server.url}/api/v1/runs/{run_id}/series")["series"]
    probes = [s for s in series if s["name"].startswith(_PROBES)]
    findings = [
        {k: f.get(k) for k in ("check", "severity", "title", "step", "layer", "source", "evidence")}
        for f in report.get("findings", [])
    ]
    checks = [
        (c["id"], c["status"], c.get("findings"), c.get("reason")) for c in report.get("checks", [])
    ]
    return "\n".join([
        "findings: " + json.dumps(findings, indent=1, default=str),
        "checks: " + json.dumps(checks, default=str),
        "setup: " + json.dumps(run.get("setup"), default=str)[:3000],
        f"series ({len(series)}; probes shown): "
        + json.dumps([{k: s.get(k) for k in _SUMMARY} for s in probes], default=str)[:6000],
    ])  # fmt: skip


def check_list_is_well_formed(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``checks`` says, for every rule, whether it ran (and found how many) or why it did not."""
    checks = report.get("checks")
    assert isinstance(checks, list) and checks, report
    for check in checks:
        assert check["status"] in ("ran", "skipped"), check
        assert check["title"], check
        if check["status"] == "skipped":
            assert check["reason"], check
        else:
            assert isinstance(check["findings"], int), check
    return {check["id"]: check for check in checks}
