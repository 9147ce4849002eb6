"""The setup and findings endpoints and /health through the API, on SQLite and PostgreSQL."""

from __future__ import annotations

import math
from typing import Any

import pytest

from tests.unit.server.health_view import adam_setup
from trickscope_wire import AgentFinding, FindingsDeclare, LayersDeclare, SetupDeclare, dumps

JSON = {"Content-Type": "application/json"}


def _put(client: Any, path: str, payload: Any) -> Any:
    return client.put(path, content=dumps(payload), headers=JSON)


def _agent_finding(layer: str, step: int, **extra: Any) -> AgentFinding:
    fields: dict[str, Any] = {
        "check": "nonfinite-weight", "severity": "error", "title": f"{layer} is NaN",
        "why": "the weights are poisoned", "remedy": "lower the LR", "step": step,
        "layer": layer, "evidence": {"nonfinite": 3},
    }  # fmt: skip
    fields.update(extra)
    return AgentFinding(**fields)


def _is_problem(response: Any, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


def test_the_setup_round_trips_and_is_replaced(client: Any, make_run: Any) -> None:
    assert make_run("r1")["setup"] == {}
    setup = adam_setup([("fc.weight", "weight")], planned=100)
    response = _put(client, "/api/v1/runs/r1/setup", SetupDeclare(setup=setup))
    assert response.status_code == 200, response.text
    assert response.json()["setup"] == setup
    _put(client, "/api/v1/runs/r1/setup", SetupDeclare(setup={"version": 1}))
    assert client.get("/api/v1/runs/r1").json()["setup"] == {"version": 1}
    listed = client.get("/api/v1/runs").json()["runs"][0]
    assert listed["setup"] == {"version": 1}


def test_setup_and_findings_of_an_unknown_run_are_404_problems(client: Any) -> None:
    _is_problem(_put(client, "/api/v1/runs/nope/setup", SetupDeclare(setup={})), 404)
    body = FindingsDeclare(findings=[_agent_finding("a", 1)])
    _is_problem(_put(client, "/api/v1/runs/nope/findings", body), 404)


@pytest.mark.parametrize(
    "body",
    [
        {"setup": [], "wire_version": 1},
        {"setup": {"x": "y" * (3 << 20)}, "wire_version": 1},
        {"setup": {}, "wire_version": 99},
        {"wire_version": 1},
    ],
)
def test_bad_setup_bodies_are_4xx_problems(client: Any, make_run: Any, body: Any) -> None:
    make_run("r1")
    response = client.put("/api/v1/runs/r1/setup", json=body)
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


def test_findings_merge_by_check_and_layer(client: Any, make_run: Any) -> None:
    make_run("r1")
    first = FindingsDeclare(findings=[_agent_finding("a", 5), _agent_finding("b", 6)])
    assert _put(client, "/api/v1/runs/r1/findings", first).status_code == 200
    again = FindingsDeclare(findings=[_agent_finding("a", 9, title="a again")])
    assert _put(client, "/api/v1/runs/r1/findings", again).status_code == 200
    health = client.get("/api/v1/runs/r1/health").json()
    agent = sorted(
        (f["layer"], f["step"], f["title"]) for f in health["findings"] if f["source"] == "agent"
    )
    assert agent == [("a", 9, "a again"), ("b", 6, "b is NaN")]
    (one,) = [f for f in health["findings"] if f["layer"] == "b"]
    assert one["detail"] == "the weights are poisoned lower the LR"
    assert one["evidence"] == {"nonfinite": 3}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("severity", "fatal"),
        ("check", ""),
        ("check", "Not A Slug"),
        ("title", "t" * 5000),
        ("layer", "l" * 600),
        ("step", -1),
        ("step", "seven"),
        ("evidence", []),
        ("evidence", {"x": "e" * (70 << 10)}),
    ],
)
def test_bad_findings_are_422_problems(client: Any, make_run: Any, field: str, value: Any) -> None:
    make_run("r1")
    finding = {
        "check": "nonfinite-weight", "severity": "error", "title": "t", "why": "w",
        "remedy": "r", "step": 1, "layer": "a", "evidence": {}, field: value,
    }  # fmt: skip
    response = client.put(
        "/api/v1/runs/r1/findings", json={"findings": [finding], "wire_version": 1}
    )
    _is_problem(response, 422)


def test_too_many_findings_are_refused(client: Any, make_run: Any) -> None:
    make_run("r1")
    many = FindingsDeclare(findings=[_agent_finding(f"l{i}", i) for i in range(1001)])
    _is_problem(_put(client, "/api/v1/runs/r1/findings", many), 422)


def test_health_reads_stored_series_and_lists_its_checks(
    client: Any, make_run: Any, post_batch: Any
) -> None:
    make_run("sick")
    layers = ["stem.weight", "head.weight", "frozen.weight"]
    assert _put(client, "/api/v1/runs/sick/layers", LayersDeclare(layers=layers)).status_code == 200
    setup = adam_setup([("stem.weight", "weight"), ("head.weight", "weight")], lr=1e-2)
    setup["params"].append(
        {"name": "frozen.weight", "shape": [2], "module": "Linear", "kind": "weight",
         "group": None, "requires_grad": False}
    )  # fmt: skip
    assert _put(client, "/api/v1/runs/sick/setup", SetupDeclare(setup=setup)).status_code == 200
    steps = list(range(100))
    post_batch("sick", "b1", {
        "grad_norm/stem.weight": (steps, [0.1] * 100),
        "grad_norm/head.weight": (steps, [0.2] * 60 + [math.nan] * 40),
        "lr/group0": (steps, [1e-2] * 100),
    })  # fmt: skip
    response = client.get("/api/v1/runs/sick/health")
    assert response.status_code == 200, response.text
    body = response.json()
    first = body["findings"][0]
    assert (first["check"], first["layer"], first["step"], first["source"]) == (
        "nonfinite-gradient", "head.weight", 60, "server"
    )  # fmt: skip
    checks = {f["check"]: f for f in body["findings"]}
    assert checks["no-warmup"]["evidence"]["peak_lr"] == 0.01
    assert any(
        f["check"] == "no-gradient" and f["layer"] == "frozen.weight" for f in body["findings"]
    )
    by_id = {c["id"]: c for c in body["checks"]}
    assert by_id["warmup"] == {
        "id": "warmup", "title": "Warmup for Adam's second moment", "status": "ran",
        "reason": None, "findings": 1,
    }  # fmt: skip
    assert by_id["ema"]["status"] == "skipped" and by_id["ema"]["reason"] == "no EMA model was seen"


def test_the_health_of_an_unknown_run_is_a_404_problem(client: Any) -> None:
    _is_problem(client.get("/api/v1/runs/nope/health"), 404)


def test_every_check_judges_the_stored_run_and_reads_its_last_values(
    client: Any, make_run: Any, post_batch: Any
) -> None:
    make_run("ema")
    layers = ["stem.weight", "head.weight"]
    assert _put(client, "/api/v1/runs/ema/layers", LayersDeclare(layers=layers)).status_code == 200
    steps = list(range(100))
    post_batch("ema", "b1", {
        "grad_norm/stem.weight": (steps, [0.1] * 100),
        "grad_norm/head.weight": (steps, [0.2] * 100),
        "loss/train": (steps, [2.0 - i / 100 for i in steps]),
        "eval/acc_raw": ([50, 99], [0.9, 0.95]),
        "eval/acc_ema": ([50, 99], [0.9, 0.7]),  # the EMA ends worse than the raw model
        "eval/loss_ema": ([50, 99], [1.0, math.nan]),  # a NaN last value is no comparison
        "eval/loss_raw": ([50, 99], [1.0, 0.5]),
    })  # fmt: skip
    assert client.post("/api/v1/runs/ema/finish", json={"status": "finished"}).status_code == 200
    body = client.get("/api/v1/runs/ema/health").json()
    failed = [c["id"] for c in body["checks"] if c["reason"] == "the check failed"]
    assert failed == []
    assert {c["id"] for c in body["checks"] if c["status"] == "ran"} >= {
        "nonfinite", "exploding-gradient", "vanishing-gradient", "loss", "ema"
    }  # fmt: skip
    worse = [f for f in body["findings"] if f["check"] == "ema-worse"]
    assert [(f["evidence"]["ema_series"], f["evidence"]["ema"]) for f in worse] == [
        ("eval/acc_ema", 0.7)
    ]
