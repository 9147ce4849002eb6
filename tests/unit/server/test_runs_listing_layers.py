"""The runs listing leaves a run's per-layer series out, also when its declared layers were stored
before the server checked them (NUL in a layer name: text PostgreSQL's jsonb refuses)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text

pytestmark = pytest.mark.timeout(60)


def test_a_layer_no_series_can_name_does_not_fail_the_listing(
    app: FastAPI, client: TestClient, make_run: Callable[..., dict], post_batch: Callable[..., dict]
) -> None:
    make_run("r", project="p")
    response = client.put("/api/v1/runs/r/layers", json={"layers": ["fc1.weight", "fc2.weight"]})
    assert response.status_code == 200, response.text
    post_batch("r", "b", {"loss": ([1], [0.5]), "grad_norm/fc1.weight": ([1], [2.0])})
    with app.state.db.transaction() as session:
        session.execute(
            text("UPDATE runs SET layers = :layers WHERE id = 'r'"),
            {"layers": '["fc1.weight", "bad\\u0000name"]'},
        )
    for path in ("/api/v1/runs?project=p", "/api/v1/runs/r"):
        response = client.get(path)
        assert response.status_code == 200, response.text
        body = response.json()
        run = body["runs"][0] if "runs" in body else body
        assert run["latest"] == {"loss": 0.5}
