"""Steps that arrive out of order: new ones merge into the summary without a recount, a step
logged again is recounted, and either way the summary is the one the points give.

``watch`` sends a due step's ``grad_norm/total`` seconds after the logged scalars of the steps
past it; a recount for that would read the series' whole history at every statistics flush.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from trickscope_server.services import ingest, summaries
from trickscope_wire import finite_or_token

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def recounts(monkeypatch: pytest.MonkeyPatch) -> list[set[int]]:
    """The ids of the series each recount summarised again, in call order."""
    calls: list[set[int]] = []
    real = summaries.resummarise

    def counting(*args: Any, **kwargs: Any) -> dict[int, int]:
        calls.append(set(kwargs["series"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(ingest, "resummarise", counting)
    return calls


def _summary(client: TestClient, run_id: str, name: str) -> dict[str, Any]:
    (found,) = [
        s for s in client.get(f"/api/v1/runs/{run_id}/series").json()["series"] if s["name"] == name
    ]
    return found


def _expected(points: dict[int, float], name: str) -> dict[str, Any]:
    steps = sorted(points)
    finite = [points[s] for s in steps if math.isfinite(points[s])]
    bad = [s for s in steps if not math.isfinite(points[s])]
    last = points[steps[-1]]
    return {
        "name": name,
        "count": len(steps),
        "first_step": steps[0],
        "last_step": steps[-1],
        "last_value": finite_or_token(last),
        "min_value": min(finite) if finite else None,
        "max_value": max(finite) if finite else None,
        "first_nonfinite_step": bad[0] if bad else None,
    }


def test_earlier_new_steps_merge_without_a_recount_and_a_step_logged_again_is_recounted(
    client: TestClient,
    make_run: Callable[..., dict],
    post_batch: Callable[..., dict],
    recounts: list[set[int]],
) -> None:
    make_run("r1")
    name = "grad_norm/total"
    post_batch("r1", "scalars", {name: ([11, 12, 13, 14], [1.0, 2.0, 3.0, 4.0])})
    post_batch("r1", "due", {name: ([0, 10], [-5.0, 9.0])})  # new, only earlier
    assert recounts == []
    got = _summary(client, "r1", name)
    assert got == _expected({0: -5.0, 10: 9.0, 11: 1.0, 12: 2.0, 13: 3.0, 14: 4.0}, name)
    post_batch("r1", "again", {name: ([5, 12], [7.0, -9.0])})  # 12 is stored: logged again
    assert len(recounts) == 1
    got = _summary(client, "r1", name)
    assert got == _expected({0: -5.0, 5: 7.0, 10: 9.0, 11: 1.0, 12: -9.0, 13: 3.0, 14: 4.0}, name)
    points = client.get("/api/v1/runs/r1/points", params={"name": name}).json()
    assert points["step"] == [0, 5, 10, 11, 12, 13, 14]
    assert points["value"] == [-5.0, 7.0, 9.0, 1.0, -9.0, 3.0, 4.0]


def test_any_arrival_order_leaves_the_summary_the_points_give(
    client: TestClient, make_run: Callable[..., dict], post_batch: Callable[..., dict]
) -> None:
    rng = random.Random(7)
    make_run("r1")
    names = ["loss", "grad_norm/total", "lr/group0"]
    sent: dict[str, dict[int, float]] = {name: {} for name in names}
    for batch in range(30):
        columns = {}
        for name in rng.sample(names, rng.randint(1, len(names))):
            start = rng.randint(0, 200)
            steps = sorted(rng.sample(range(start, start + 40), rng.randint(1, 6)))
            values = [
                rng.choice([math.nan, math.inf, rng.uniform(-9, 9)])
                if rng.random() < 0.1
                else rng.uniform(-9, 9)
                for _ in steps
            ]
            columns[name] = (steps, values)
            sent[name].update(zip(steps, values, strict=True))
        post_batch("r1", f"b{batch}", columns)
        for name in columns:
            want = _expected(sent[name], name)
            assert _summary(client, "r1", name) == want, (batch, name)
