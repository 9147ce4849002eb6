"""Input the server must refuse before storing it (issue 16, items 1, 2, 5, 6, 7), on SQLite and
PostgreSQL alike, and reads that survive rows stored before these checks existed."""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import insert

from tests.unit.server.conftest import point_batch
from trickscope_server.app import create_app
from trickscope_server.config import Settings
from trickscope_server.services._payload import b64decode
from trickscope_server.storage import RunRow
from trickscope_wire import dumps

JSON = {"content-type": "application/json"}
INT64_MAX = (1 << 63) - 1


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    """A loopback client (the Host check accepts it) whose server errors come back as answers."""
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as c:
        yield c


def put_raw(client: TestClient, run_id: str, body: str | bytes) -> Any:
    return client.put(f"/api/v1/runs/{run_id}", content=body, headers=JSON)


def assert_refused(response: Any, loc: list[Any], status: int = 422) -> None:
    """A problem response of ``status`` whose errors name ``loc``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    if loc:
        assert loc in [e["loc"] for e in response.json()["errors"]], response.text


def assert_absent(client: TestClient, run_id: str) -> None:
    assert client.get(f"/api/v1/runs/{run_id}").status_code == 404
    listing = client.get("/api/v1/runs")
    assert listing.status_code == 200, listing.text
    assert run_id not in [r["id"] for r in listing.json()["runs"]]


def test_deeply_nested_config_is_refused_and_not_stored(client: TestClient) -> None:
    deep = '{"a":' * 300 + "1" + "}" * 300  # ~1.8 KB
    body = '{"project":"p","name":"n","config":' + deep + "}"
    assert len(body) < 2000
    response = put_raw(client, "deep", body)
    assert_refused(response, [])
    assert response.json()["errors"][0]["loc"][:3] == ["body", "config", "a"]
    assert_absent(client, "deep")


def test_config_deeper_than_the_setting_is_refused(client: TestClient) -> None:
    ok: dict[str, Any] = {}
    node = ok
    for _ in range(31):  # 32 levels in all
        node["a"] = {}
        node = node["a"]
    assert client.put(
        "/api/v1/runs/ok", json={"project": "p", "name": "n", "config": ok}
    ).is_success
    node["a"] = {}  # 33 levels
    response = client.put("/api/v1/runs/over", json={"project": "p", "name": "n", "config": ok})
    assert_refused(response, ["body", "config", *(["a"] * 32)])
    assert_absent(client, "over")


def test_lone_surrogate_tag_is_refused_and_not_stored(client: TestClient) -> None:
    response = put_raw(client, "surrogate", '{"project":"p","name":"n","tags":["\\ud800"]}')
    assert_refused(response, ["body", "tags", 0])
    assert_absent(client, "surrogate")


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ('{"project":"p","name":"a\\u0000b"}', ["body", "name"]),
        ('{"project":"p","name":"\\udc00"}', ["body", "name"]),
        ('{"project":"p\\u0000","name":"n"}', ["body", "project"]),
        ('{"project":"p","name":"n","config":{"lr":NaN}}', ["body", "config", "lr"]),
        ('{"project":"p","name":"n","config":{"lr":-Infinity}}', ["body", "config", "lr"]),
        ('{"project":"p","name":"n","config":{"lr":1e400}}', ["body", "config", "lr"]),
        ('{"project":"p","name":"n","config":{"k\\u0000":1}}', ["body", "config", "k\x00"]),
        ('{"project":"p","name":"n","config":{"k":["x\\u0000"]}}', ["body", "config", "k", 0]),
        ('{"project":"p","name":"n","system":{"host":"\\ud83d"}}', ["body", "system", "host"]),
        ('{"project":"p","name":"n","started_at":1e300}', ["body", "started_at"]),
        ('{"project":"p","name":"n","started_at":-1}', ["body", "started_at"]),
        ('{"project":"p","name":"n","started_at":253402300800}', ["body", "started_at"]),
    ],
)
def test_run_bodies_no_back_end_can_store_are_refused(
    client: TestClient, body: str, loc: list[Any]
) -> None:
    assert_refused(put_raw(client, "r1", body), loc)
    assert_absent(client, "r1")


def test_a_surrogate_pair_is_one_character_and_accepted(client: TestClient) -> None:
    response = put_raw(client, "pair", '{"project":"p","name":"\\ud83d\\ude00","tags":["ok"]}')
    assert response.status_code == 200, response.text
    assert response.json()["name"] == "\U0001f600"


@pytest.mark.parametrize(
    ("extra", "loc"),
    [
        ({"tags": ["t"] * 257}, ["body", "tags"]),
        ({"tags": ["x" * 257]}, ["body", "tags", 0]),
        ({"name": "x" * 257}, ["body", "name"]),
        ({"config": {"blob": "x" * 1000}}, ["body", "config"]),
        ({"system": {"blob": "x" * 1000}}, ["body", "system"]),
    ],
)
def test_run_counts_and_sizes_are_bounded(
    settings: Settings, extra: dict[str, Any], loc: list[Any]
) -> None:
    app = create_app(settings.model_copy(update={"max_config_bytes": 1000}))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        response = client.put("/api/v1/runs/big", json={"project": "p", "name": "n", **extra})
        assert_refused(response, loc)
        assert_absent(client, "big")
    app.state.db.dispose()


def test_finish_time_out_of_range_is_refused(client: TestClient) -> None:
    client.put("/api/v1/runs/r", json={"project": "p", "name": "n"})
    for ended_at in (1e300, -1e20, 253402300800):
        response = client.post("/api/v1/runs/r/finish", json={"ended_at": ended_at})
        assert_refused(response, ["body", "ended_at"])
    assert client.get("/api/v1/runs/r").json()["status"] == "running"
    assert client.get("/api/v1/runs").status_code == 200


def test_layers_are_bounded(client: TestClient, settings: Settings) -> None:
    client.put("/api/v1/runs/r", json={"project": "p", "name": "n"})
    too_many = [f"l{i}" for i in range(settings.max_layers + 1)]
    assert_refused(client.put("/api/v1/runs/r/layers", json={"layers": too_many}), [])
    response = client.put("/api/v1/runs/r/layers", json={"layers": ["ok", "a\x00"]})
    assert_refused(response, ["body", "layers", 1])
    assert client.get("/api/v1/runs/r").json()["layers"] == []


def test_nul_in_a_metric_name_is_refused_and_later_batches_go_on(client: TestClient) -> None:
    client.put("/api/v1/runs/r", json={"project": "p", "name": "n"})
    poison = dumps(point_batch("b1", {"loss\x00x": ([1], [1.0])}))
    response = client.post("/api/v1/runs/r/points", content=poison, headers=JSON)
    assert_refused(response, ["body", "series", 0, "name"])
    good = dumps(point_batch("b2", {"loss": ([1, 2], [1.0, 2.0])}))
    assert client.post("/api/v1/runs/r/points", content=good, headers=JSON).status_code == 200
    names = [s["name"] for s in client.get("/api/v1/runs/r/series").json()["series"]]
    assert names == ["loss"]


def test_steps_at_the_int64_bounds_are_stored_and_read(client: TestClient) -> None:
    client.put("/api/v1/runs/r", json={"project": "p", "name": "n"})
    steps = [-(1 << 63), 0, INT64_MAX]
    batch = dumps(point_batch("b", {"x": (steps, [1.0, 2.0, 3.0])}))
    assert client.post("/api/v1/runs/r/points", content=batch, headers=JSON).status_code == 200
    read = client.get(f"/api/v1/runs/r/points?name=x&start={-(1 << 63)}&end={INT64_MAX}")
    assert read.status_code == 200, read.text
    assert read.json()["step"] == steps


@pytest.mark.parametrize(
    ("query", "loc"),
    [
        ("/api/v1/runs/r/points?name=x&start=9223372036854775808", ["query", "start"]),
        ("/api/v1/runs/r/points?name=x&end=-9223372036854775809", ["query", "end"]),
        ("/api/v1/runs/r/points?name=x&points=99999999999999999999", ["query", "points"]),
        ("/api/v1/compare/series?runs=r&name=x&start=99999999999999999999", ["query", "start"]),
        ("/api/v1/runs/r/events?after=9223372036854775808", ["query", "after"]),
        ("/api/v1/runs?project=a%00b", ["query", "project"]),
        ("/api/v1/runs?tag=%00", ["query", "tag"]),
        ("/api/v1/runs?sort=config:a%00", ["query", "sort"]),
        ("/api/v1/runs?config=a:%00", ["query", "config"]),
        ("/api/v1/runs/r/points?name=a%00b", ["query", "name"]),
        ("/api/v1/runs/r/heatmap?stat=a%00", ["query", "stat"]),
        ("/api/v1/runs/r/histograms?name=a%00", ["query", "name"]),
    ],
)
def test_query_parameters_out_of_range_or_unstorable_are_refused(
    client: TestClient, query: str, loc: list[Any]
) -> None:
    client.put("/api/v1/runs/r", json={"project": "p", "name": "n"})
    assert_refused(client.get(query), loc)


def test_last_event_id_beyond_int64_is_refused(client: TestClient) -> None:
    client.put("/api/v1/runs/r", json={"project": "p", "name": "n"})
    response = client.get("/api/v1/runs/r/events", headers={"Last-Event-ID": str(1 << 63)})
    assert_refused(response, ["header", "last-event-id"])


def test_stored_values_never_break_config_queries(client: TestClient) -> None:
    for run_id, lr in (("a", 0.1), ("b", 0.2)):
        client.put(
            f"/api/v1/runs/{run_id}", json={"project": "p", "name": "n", "config": {"lr": lr}}
        )
    for bad in ('{"lr":NaN}', '{"lr\\u0000":1}', '{"lr":"x\\u0000"}'):
        assert (
            put_raw(client, "c", '{"project":"p","name":"n","config":' + bad + "}").status_code
            == 422
        )
    for query in ("?sort=config:lr", "?sort=-config:lr", "?config=lr:0.1", "?tag=x"):
        response = client.get("/api/v1/runs" + query)
        assert response.status_code == 200, (query, response.text)
    ordered = client.get("/api/v1/runs?sort=config:lr").json()["runs"]
    assert [r["id"] for r in ordered] == ["a", "b"]


@pytest.fixture
def big_body_app(settings: Settings) -> Iterator[FastAPI]:
    """An app with the default body limit (64 MiB)."""
    application = create_app(settings.model_copy(update={"max_body_bytes": 64 << 20}))
    yield application
    application.state.db.dispose()


def test_a_200_mb_run_body_is_refused_before_it_is_stored(big_body_app: FastAPI) -> None:
    # A valid run body padded to 200 MB with whitespace: only its size is wrong.
    body = b'{"project":"p","name":"n"' + b" " * (200 << 20) + b"}"
    with TestClient(big_body_app, base_url="http://127.0.0.1") as c:
        response = c.put("/api/v1/runs/huge", content=body, headers=JSON)
        assert_refused(response, [], status=413)
        chunked = c.put(
            "/api/v1/runs/huge",
            content=iter([body[i : i + (8 << 20)] for i in range(0, len(body), 8 << 20)]),
            headers=JSON,
        )
        assert_refused(chunked, [], status=413)
        assert_absent(c, "huge")


def test_every_json_body_route_is_size_limited(client: TestClient, settings: Settings) -> None:
    client.put("/api/v1/runs/r", json={"project": "p", "name": "n"})
    pad = b" " * (settings.max_body_bytes + 1)
    for method, path, body in (
        ("PUT", "/api/v1/runs/r/layers", b'{"layers":[]' + pad + b"}"),
        ("PUT", "/api/v1/runs/r/setup", b'{"setup":{}' + pad + b"}"),
        ("PUT", "/api/v1/runs/r/findings", b'{"findings":[]' + pad + b"}"),
        ("PUT", "/api/v1/runs/r/ranks/0", b'{"system":{}' + pad + b"}"),
        ("POST", "/api/v1/runs/r/finish", b"{" + pad + b"}"),
    ):
        response = client.request(method, path, content=body, headers=JSON)
        assert_refused(response, [], status=413)
    assert client.get("/api/v1/runs/r").json()["status"] == "running"


def _legacy_row(run_id: str, **values: Any) -> dict[str, Any]:
    now = time.time()
    row: dict[str, Any] = {
        "id": run_id,
        "project": "p",
        "name": run_id,
        "status": "running",
        "config": {},
        "tags": [],
        "system": {},
        "layers": [],
        "ranks": {},
        "setup": {},
        "agent_findings": {},
        "created_at": now,
        "started_at": now,
        "ended_at": None,
        "updated_at": now,
        "last_seq": 0,
    }
    row.update(values)
    return row


def test_rows_stored_before_the_checks_still_read(app: FastAPI, client: TestClient) -> None:
    """Values the old server stored (it answered 500 but committed): every read still answers."""
    db = app.state.db
    deep: Any = 1
    for _ in range(300):
        deep = {"a": deep}
    rows = [
        _legacy_row("deep", config={"lr": 0.1, "deep": deep}),
        _legacy_row("surrogate", tags=["\ud800"], config={"k\ud800": "v"}),
        _legacy_row("nul", config={"lr\x00": "x\x00"}, tags=["a\x00"]),
        _legacy_row("time", started_at=1e300, ended_at=-1e20),
        _legacy_row(
            "finding",
            agent_findings={
                "nan|": {
                    "check": "nan",
                    "severity": "error",
                    "title": "t\ud800",
                    "why": "w",
                    "remedy": "r",
                    "step": 1,
                    "layer": None,
                    "evidence": {"big": 1 << 70},
                }
            },
        ),
    ]
    if db.dialect == "sqlite":  # PostgreSQL's json type never accepted NaN
        rows.append(_legacy_row("nan", config={"lr": float("nan")}))
    with db.transaction() as session:
        session.execute(insert(RunRow), rows)
    listing = client.get("/api/v1/runs?limit=200")
    assert listing.status_code == 200, listing.text
    assert {r["id"] for r in listing.json()["runs"]} == {r["id"] for r in rows}
    for row in rows:
        one = client.get(f"/api/v1/runs/{row['id']}")
        assert one.status_code == 200, one.text
        assert client.get(f"/api/v1/runs/{row['id']}/health").status_code == 200
    shown = {r["id"]: r for r in listing.json()["runs"]}
    assert shown["surrogate"]["tags"] == ["\ufffd"]
    assert shown["time"]["started_at"] is None
    for query in ("?sort=config:lr", "?sort=-config:lr", "?config=lr:0.1", "?tag=a", "?sort=name"):
        response = client.get("/api/v1/runs" + query)
        assert response.status_code == 200, (query, response.text)
    assert [r["id"] for r in client.get("/api/v1/runs?config=lr:0.1").json()["runs"]] == ["deep"]
    # The ids of every row can be listed, so each can be deleted.
    for row in rows:
        assert client.delete(f"/api/v1/runs/{row['id']}").status_code == 204
    assert json.loads(client.get("/api/v1/runs").text)["runs"] == []


def test_series_summaries_describe_the_points_a_read_returns(client: TestClient) -> None:
    """Issue 16, item 9: steps {1: 9, 2: 4} after re-logging were summarised as count 5, min 1."""
    client.put("/api/v1/runs/r", json={"project": "p", "name": "n"})
    for batch_id, series in (
        ("b1", {"x": ([1, 2], [1.0, 2.0])}),
        ("b2", {"x": ([1, 2], [3.0, 4.0])}),
        ("b3", {"x": ([1], [9.0])}),
        ("b4", {"y": ([5, 5, 6], [float("nan"), 7.0, 8.0])}),  # a step twice in one batch
        ("b5", {"y": ([7], [0.5])}),  # a new step: merged without a recount
    ):
        body = dumps(point_batch(batch_id, series))
        assert client.post("/api/v1/runs/r/points", content=body, headers=JSON).status_code == 200
    read = client.get("/api/v1/runs/r/points?name=x").json()
    assert dict(zip(read["step"], read["value"], strict=True)) == {1: 9.0, 2: 4.0}
    summary = {s["name"]: s for s in client.get("/api/v1/runs/r/series").json()["series"]}
    x, y = summary["x"], summary["y"]
    assert (x["count"], x["min_value"], x["max_value"], x["last_value"]) == (2, 4.0, 9.0, 4.0)
    assert (x["first_step"], x["last_step"]) == (1, 2)
    assert (y["count"], y["min_value"], y["max_value"]) == (3, 0.5, 8.0)
    assert y["first_nonfinite_step"] is None  # the NaN at step 5 was overwritten by 7.0
    assert client.get("/api/v1/runs/r").json()["latest"] == {"x": 4.0, "y": 0.5}


def _cursor(*parts: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(parts))).decode().rstrip("=")


@pytest.mark.parametrize(
    ("sort", "value", "run_id", "status"),
    [
        ("-created_at", 1.0, "a\x00", 422),
        ("-created_at", "x\x00", "a", 422),
        ("-created_at", [1], "a", 422),
        ("-created_at", 18446744073709551615, "a", 200),
        ("-created_at", {"f": "NaN"}, "a", 200),
        ("config:lr", {"x": "\x00"}, "a", 422),
        ("config:lr", {"x": 1}, "a", 200),
        ("config:lr", 18446744073709551615, "a", 422),
        ("metric:loss", "zz", "a", 422),
        ("name", 5, "a", 422),
        ("name", "b", "a", 200),
    ],
)
def test_hand_made_cursors_are_refused_or_answered(
    client: TestClient, sort: str, value: Any, run_id: str, status: int
) -> None:
    client.put("/api/v1/runs/a", json={"project": "p", "name": "n", "config": {"lr": {"x": 0}}})
    response = client.get(
        "/api/v1/runs", params={"sort": sort, "cursor": _cursor(sort, False, value, run_id)}
    )
    assert response.status_code == status, response.text
    if status == 422:
        assert_refused(response, ["query", "cursor"])


@pytest.mark.parametrize(
    "text",
    [
        "",
        "AAAAAAAA8D8=",
        "YWJj",
        "YWJj====",  # excess padding: binascii's strict mode takes it
        "abc",  # no padding
        "ab=c",
        "====",
        "YW Jj",
        "YWJj\n",
        "ÿÿÿÿ",
        "YW-_",  # the URL-safe alphabet
    ],
)
def test_base64_columns_are_taken_and_refused_as_binascii_strict_mode_does(text: str) -> None:
    """The fast decoder changes no answer: what it refuses, binascii decides, with its own
    message (``Incorrect padding``, ...)."""
    try:
        expected: bytes | str = binascii.a2b_base64(text, strict_mode=True)
    except ValueError as exc:
        expected = str(exc)
    try:
        got: bytes | str = b64decode(text)
    except ValueError as exc:
        got = str(exc)
    assert got == expected
