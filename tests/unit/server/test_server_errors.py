"""Bad input is answered with a useful problem+json, never a 500."""

from __future__ import annotations

import base64
import gzip
from collections.abc import Callable

import orjson
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.unit.server.conftest import point_batch
from trickscope_wire import dumps, encode_f64, encode_i64

pytestmark = pytest.mark.timeout(60)

GOOD_SERIES = {
    "name": "loss",
    "steps": encode_i64([1, 2]),
    "values": encode_f64([1.0, 2.0]),
    "times": encode_f64([0.0, 0.0]),
}


def _assert_problem(response: object, status: int, *needles: str) -> dict:  # type: ignore[type-arg]
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    assert response.headers["content-type"] == "application/problem+json"  # type: ignore[attr-defined]
    body: dict = response.json()  # type: ignore[attr-defined,type-arg]
    assert {"type", "title", "status", "detail", "instance"} <= body.keys()
    assert body["status"] == status
    for needle in needles:
        assert needle in body["detail"], body["detail"]
    return body


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b"{not json", 422, "not valid JSON"),
        (b"[1, 2]", 422, "must be a JSON object"),
        (b'{"batch_id": 5, "series": []}', 422, "batch_id"),
        (b'{"batch_id": "b", "series": {}}', 422, "series"),
        (b'{"batch_id": "b", "series": [5]}', 422, "must be an object"),
        (b'{"batch_id": "b", "series": [{"name": 3}]}', 422, "name"),
        (
            b'{"batch_id": "b", "series": [%s]}'
            % orjson.dumps({**GOOD_SERIES, "steps": "!!notbase64"}),
            422,
            "not valid base64",
        ),
        (
            b'{"batch_id": "b", "series": [%s]}' % orjson.dumps({**GOOD_SERIES, "values": 12}),
            422,
            "base64 string",
        ),
        (
            b'{"batch_id": "b", "series": [%s]}'
            % orjson.dumps({**GOOD_SERIES, "values": base64.b64encode(b"1234567").decode()}),
            422,
            "multiple of 8",
        ),
        (
            b'{"batch_id": "b", "series": [%s]}'
            % orjson.dumps({**GOOD_SERIES, "times": encode_f64([0.0])}),
            422,
            "'loss': columns differ in length",
        ),
        (b'{"wire_version": "1", "batch_id": "b", "series": []}', 422, "wire_version"),
        (b'{"wire_version": 99, "batch_id": "b", "series": []}', 400, "version 99"),
    ],
)
def test_malformed_batches_are_rejected_with_a_problem(
    client: TestClient, make_run: Callable[..., dict], body: bytes, status: int, needle: str
) -> None:
    make_run("r1")
    response = client.post("/api/v1/runs/r1/points", content=body)
    _assert_problem(response, status, needle)
    assert client.get("/api/v1/runs/r1/series").json() == {"series": []}


def test_unknown_wire_version_names_both_versions(
    client: TestClient, make_run: Callable[..., dict]
) -> None:
    make_run("r1")
    response = client.post(
        "/api/v1/runs/r1/points", content=b'{"wire_version": 7, "batch_id": "b", "series": []}'
    )
    body = _assert_problem(response, 400, "version 1", "version 7")
    assert body["type"].endswith("unsupported-wire-version")
    response = client.put("/api/v1/runs/r2", json={"project": "p", "name": "n", "wire_version": 2})
    _assert_problem(response, 400, "version 1", "version 2")


def test_points_for_an_unknown_run_say_to_create_it_first(client: TestClient) -> None:
    body = dumps(point_batch("b1", {"loss": ([1], [1.0])}))
    response = client.post("/api/v1/runs/nope/points", content=body)
    _assert_problem(response, 404, "PUT /api/v1/runs/nope")


@pytest.mark.parametrize("run_id", ["bad$id", "-starts-with-a-dash", "a" * 65, "ends%0A"])
def test_points_for_a_malformed_run_id_are_422_naming_the_pattern(
    client: TestClient, run_id: str
) -> None:
    """The ingest route checks the run id itself (it skips FastAPI's parameter validation),
    with the answer every other route gives, a trailing newline included."""
    body = dumps(point_batch("b1", {"loss": ([1], [1.0])}))
    got = client.post(f"/api/v1/runs/{run_id}/points", content=body)
    problem = _assert_problem(got, 422, "path.run_id", "should match pattern")
    same = client.get(f"/api/v1/runs/{run_id}")  # a route FastAPI validates
    assert same.status_code == 422 and same.json()["errors"] == problem["errors"]


def test_oversized_bodies_are_413_naming_the_limit(
    client: TestClient, make_run: Callable[..., dict]
) -> None:
    make_run("r1")
    big = b" " * ((1 << 20) + 1)
    _assert_problem(client.post("/api/v1/runs/r1/points", content=big), 413, "1048576 bytes")
    bomb = gzip.compress(b" " * (4 << 20))
    response = client.post(
        "/api/v1/runs/r1/points", content=bomb, headers={"Content-Encoding": "gzip"}
    )
    _assert_problem(response, 413, "decompressed", "1048576 bytes")


def test_batches_over_the_point_limit_are_413(
    app: FastAPI, client: TestClient, make_run: Callable[..., dict]
) -> None:
    make_run("r1")
    app.state.settings.max_batch_points = 10
    steps = list(range(8))
    batch = point_batch("b1", {"a": (steps, [0.0] * 8), "b": (steps, [0.0] * 8)})
    response = client.post("/api/v1/runs/r1/points", content=dumps(batch))
    _assert_problem(response, 413, "10 points")


def test_bad_gzip_and_unknown_encodings_are_rejected(
    client: TestClient, make_run: Callable[..., dict]
) -> None:
    make_run("r1")
    response = client.post(
        "/api/v1/runs/r1/points", content=b"not gzip", headers={"Content-Encoding": "gzip"}
    )
    _assert_problem(response, 422, "gzip")
    response = client.post(
        "/api/v1/runs/r1/points", content=b"{}", headers={"Content-Encoding": "br"}
    )
    _assert_problem(response, 415, "gzip")


@pytest.mark.parametrize(
    ("method", "path", "payload", "status", "needle"),
    [
        ("put", "/api/v1/runs/r1", {"project": 5, "name": "n"}, 422, "project"),
        ("put", "/api/v1/runs/r1", {"name": "n"}, 422, "project"),
        ("put", "/api/v1/runs/r1", {"project": "", "name": "n"}, 422, "project"),
        ("put", "/api/v1/runs/bad id!", {"project": "p", "name": "n"}, 422, "run_id"),
        ("put", "/api/v1/runs/r1/layers", {"layers": "fc"}, 422, "layers"),
        ("put", "/api/v1/runs/r1/layers", {"layers": [""]}, 422, "layers[0]"),
        ("post", "/api/v1/runs/r1/finish", {"status": "exploded"}, 422, "status"),
        ("post", "/api/v1/runs/r1/finish", {"status": "running"}, 422, "status"),
        ("put", "/api/v1/runs/zz/layers", {"layers": ["a"]}, 404, "zz"),
        ("post", "/api/v1/runs/zz/finish", {"status": "finished"}, 404, "zz"),
    ],
)
def test_bad_run_payloads_are_problems(
    client: TestClient,
    make_run: Callable[..., dict],
    method: str,
    path: str,
    payload: dict,  # type: ignore[type-arg]
    status: int,
    needle: str,
) -> None:
    make_run("r1")
    response = getattr(client, method)(path, json=payload)
    body = _assert_problem(response, status, needle)
    if status == 422 and "errors" in body:
        assert all({"loc", "msg"} <= e.keys() for e in body["errors"])


def test_malformed_json_on_a_dataclass_route_is_422(client: TestClient) -> None:
    response = client.put(
        "/api/v1/runs/r1", content=b"{oops", headers={"Content-Type": "application/json"}
    )
    body = _assert_problem(response, 422)
    assert body["errors"]


@pytest.mark.parametrize(
    ("path", "params", "status", "needle"),
    [
        ("/api/v1/runs", {"limit": 0}, 422, "limit"),
        ("/api/v1/runs", {"limit": 201}, 422, "limit"),
        ("/api/v1/runs", {"limit": "x"}, 422, "limit"),
        ("/api/v1/runs", {"status": "sleeping"}, 422, "status"),
        ("/api/v1/runs", {"cursor": "garbage"}, 422, "cursor"),
        ("/api/v1/runs/r1/points", {}, 422, "name"),
        ("/api/v1/runs/r1/points", {"name": "nope"}, 404, "nope"),
        ("/api/v1/runs/r1/points", {"name": "loss", "points": 1}, 422, "points"),
        ("/api/v1/runs/r1/points", {"name": "loss", "points": 10**9}, 422, "points"),
        ("/api/v1/runs/r1/points", {"name": "loss", "start": "a"}, 422, "start"),
        ("/api/v1/runs/r1/points", {"name": "loss", "start": 5, "end": 1}, 422, "start"),
        ("/api/v1/runs/r1/heatmap", {}, 422, "stat"),
        ("/api/v1/runs/r1/heatmap", {"stat": "a/b"}, 422, "stat"),
        ("/api/v1/runs/r1/heatmap", {"stat": "g", "points": 2}, 422, "points"),
        ("/api/v1/runs/zz/heatmap", {"stat": "g"}, 404, "zz"),
        ("/api/v1/runs/zz/series", {}, 404, "zz"),
        ("/api/v1/runs/r1/events", {"after": -1}, 422, "after"),
        ("/api/v1/runs/zz/events", {}, 404, "zz"),
        ("/api/v1/nothing-here", {}, 404, ""),
    ],
)
def test_bad_queries_are_problems(
    client: TestClient,
    make_run: Callable[..., dict],
    post_batch: Callable[..., dict],
    path: str,
    params: dict,  # type: ignore[type-arg]
    status: int,
    needle: str,
) -> None:
    make_run("r1")
    post_batch("r1", "b1", {"loss": ([1], [1.0])})
    _assert_problem(client.get(path, params=params), status, needle)


def test_bad_last_event_id_is_a_problem(client: TestClient, make_run: Callable[..., dict]) -> None:
    make_run("r1")
    response = client.get("/api/v1/runs/r1/events", headers={"Last-Event-ID": "abc"})
    _assert_problem(response, 422, "Last-Event-ID")


def test_unexpected_errors_are_a_generic_500_with_a_request_id(
    app: FastAPI, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr("trickscope_server.services.runs.list_runs", explode)
    response = client.get("/api/v1/runs")
    body = _assert_problem(response, 500, "request id")
    assert "secret" not in response.text
    assert response.headers["X-Request-ID"] in body["detail"]


def test_json_routes_accept_gzip_bodies(client: TestClient) -> None:
    """The agent gzips any body over a few KiB: a large config or a long layer list."""
    config = {f"key{i}": "x" * 40 for i in range(200)}
    run = {"project": "p", "name": "n", "config": config}
    gz = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    response = client.put("/api/v1/runs/r1", content=gzip.compress(orjson.dumps(run)), headers=gz)
    assert response.status_code == 200, response.text
    assert response.json()["config"] == config
    layers = [f"blocks.{i}.attn.qkv.weight" for i in range(300)]
    body = gzip.compress(orjson.dumps({"layers": layers}))
    response = client.put("/api/v1/runs/r1/layers", content=body, headers=gz)
    assert response.status_code == 200, response.text
    assert client.get("/api/v1/runs/r1").json()["layers"] == layers


def test_json_routes_reject_bad_encodings_with_problems(
    client: TestClient, make_run: Callable[..., dict]
) -> None:
    make_run("r1")
    path = "/api/v1/runs/r1/layers"
    response = client.put(path, content=b"not gzip", headers={"Content-Encoding": "gzip"})
    _assert_problem(response, 422, "gzip")
    response = client.put(path, content=b"{}", headers={"Content-Encoding": "br"})
    _assert_problem(response, 415, "gzip")
    bomb = gzip.compress(b" " * (4 << 20))
    response = client.put(path, content=bomb, headers={"Content-Encoding": "gzip"})
    _assert_problem(response, 413, "decompressed", "1048576 bytes")
    broken = gzip.compress(b'{"layers": [')
    response = client.put(path, content=broken, headers={"Content-Encoding": "gzip"})
    _assert_problem(response, 422)
