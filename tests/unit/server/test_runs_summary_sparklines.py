"""The runs listing's step and summary fields, and the batched sparklines of a page of runs."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

pytestmark = pytest.mark.timeout(60)

NAN = float("nan")


def test_runs_carry_last_step_and_min_max_of_run_level_series(
    client: TestClient,
    make_run: Callable[..., dict],  # type: ignore[type-arg]
    post_batch: Callable[..., dict],  # type: ignore[type-arg]
) -> None:
    make_run("a")
    client.put("/api/v1/runs/a/layers", json={"layers": ["fc.weight"]})
    post_batch(
        "a",
        "b1",
        {
            "loss/train": ([0, 1, 2, 3], [2.0, NAN, 0.5, 1.0]),
            "eval/acc": ([5], [0.75]),
            "grad_norm/fc.weight": ([90], [3.0]),  # per-layer: neither step nor summary
        },
    )
    make_run("b")
    runs = {r["id"]: r for r in client.get("/api/v1/runs").json()["runs"]}
    assert runs["a"]["last_step"] == 5
    assert runs["a"]["summary"] == {
        "eval/acc": {"min": 0.75, "max": 0.75},
        "loss/train": {"min": 0.5, "max": 2.0},
    }
    assert runs["b"]["last_step"] is None and runs["b"]["summary"] == {}
    one = client.get("/api/v1/runs/a").json()
    assert one["last_step"] == 5 and one["summary"]["loss/train"]["max"] == 2.0


def test_sparklines_pick_the_first_present_name_per_run_in_one_request(
    client: TestClient,
    make_run: Callable[..., dict],  # type: ignore[type-arg]
    post_batch: Callable[..., dict],  # type: ignore[type-arg]
) -> None:
    make_run("a")
    post_batch("a", "b1", {"loss/train": (list(range(500)), [float(s) for s in range(500)])})
    post_batch("a", "b2", {"loss": ([0, 1], [9.0, 8.0])})
    make_run("b")
    post_batch("b", "b1", {"loss": ([0, 1, 2], [3.0, NAN, 1.0])})
    make_run("c")  # none of the names
    response = client.get(
        "/api/v1/sparklines",
        params=[("runs", "a,b,c,gone"), ("name", "loss/train"), ("name", "loss"), ("points", 40)],
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["names"] == ["loss/train", "loss"]
    a, b, c, gone = body["runs"]
    assert [r["run_id"] for r in body["runs"]] == ["a", "b", "c", "gone"]
    assert a["name"] == "loss/train" and a["total"] == 500
    assert 3 <= len(a["step"]) <= 40 and a["step"][0] == 0 and a["step"][-1] == 499
    assert a["value"] == [float(s) for s in a["step"]]
    assert b == {
        "run_id": "b",
        "name": "loss",
        "step": [0, 1, 2],
        "value": [3.0, "NaN", 1.0],
        "total": 3,
    }
    assert c["name"] is None and c["step"] == [] and c["total"] == 0
    assert gone["name"] is None and gone["value"] == []


@pytest.mark.parametrize(
    "params",
    [
        [("runs", "a"), ("name", "loss"), ("points", 2)],
        [("runs", "a"), ("name", "loss"), ("points", 10_000)],
        [("runs", ","), ("name", "loss")],
        [("runs", ",".join(f"r{i}" for i in range(201))), ("name", "loss")],
        [("runs", "a")],
        [("runs", "a"), *[("name", f"n{i}") for i in range(9)]],
        [("runs", "a"), ("name", "x" * 513)],
        [("runs", "a"), ("name", "loss"), ("points", "many")],
    ],
)
def test_sparklines_reject_bad_queries_with_a_problem(
    client: TestClient,
    make_run: Callable[..., dict],  # type: ignore[type-arg]
    params: list[tuple[str, object]],
) -> None:
    make_run("a")
    response = client.get("/api/v1/sparklines", params=params)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
