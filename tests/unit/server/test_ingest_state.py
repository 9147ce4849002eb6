"""What ingest keeps of a run between its batches (``storage/ingest_state.py``) never makes a read
inexact: another server writing the run in between is noticed, and a warm run's batch reads
nothing back before writing."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from tests.unit.server.conftest import JSON
from trickscope_server.app import create_app
from trickscope_server.config import Settings
from trickscope_wire import (
    BLOCKS_WIRE_VERSION,
    PointBatch,
    SeriesColumns,
    StatBlock,
    dumps,
    encode_f64,
    encode_i64,
)

pytestmark = pytest.mark.timeout(120)

LAYERS = ["fc1.weight", "fc2.weight"]
Send = Callable[[str, str, bytes | None], tuple[int, object]]  # (method, path, body) -> answer
Sent = dict[str, dict[int, float]]  # name -> {step: value}, the later write of a step kept


def batch_body(
    batch_id: str, steps: list[int], seed: float, series: list[str], blocks: bool, sent: Sent
) -> bytes:
    """A batch of ``series`` (one column each) and, with ``blocks``, a grad_norm block over
    LAYERS, all over ``steps``; NaN and ±Inf included. Records what it sends in ``sent``."""
    times = encode_f64([float(s) for s in steps])
    members = [f"grad_norm/{layer}" for layer in LAYERS] if blocks else []
    columns: dict[str, str] = {}
    for k, name in enumerate(series + members):
        values = [seed + 10 * k + s / 8 for s in steps]
        if k == 1 and len(values) > 2:
            values[1], values[2] = math.nan, math.inf
        sent.setdefault(name, {}).update(zip(steps, values, strict=True))
        columns[name] = encode_f64(values)
    stat_blocks = [
        StatBlock("grad_norm", LAYERS, encode_i64(steps), times, [columns[n] for n in members])
    ]
    return dumps(
        PointBatch(
            batch_id=batch_id,
            series=[SeriesColumns(n, encode_i64(steps), columns[n], times) for n in series],
            wire_version=BLOCKS_WIRE_VERSION,
            blocks=stat_blocks if blocks else [],
        )
    )


def expected(points: dict[int, float]) -> dict[str, object]:
    """The summary a recount of these points gives."""
    steps = sorted(points)
    finite = [v for v in points.values() if math.isfinite(v)]
    last = points[steps[-1]]
    return {
        "count": len(steps),
        "first_step": steps[0],
        "last_step": steps[-1],
        "last_value": last if math.isfinite(last) else ("NaN" if math.isnan(last) else "Infinity"),
        "min_value": min(finite) if finite else None,
        "max_value": max(finite) if finite else None,
        "first_nonfinite_step": min(
            (s for s, v in points.items() if not math.isfinite(v)), default=None
        ),
    }


def two_writers_scenario(first: Send, second: Send, run_id: str) -> None:
    """Two servers write one run in turns (a series and block members re-logged across them, a
    series created by the second); both then read every summary and point exactly."""
    base = f"/api/v1/runs/{run_id}"
    assert first("PUT", base, b'{"project": "p", "name": "n"}')[0] == 200
    assert first("PUT", f"{base}/layers", dumps({"layers": LAYERS}))[0] == 200
    sent: Sent = {}
    posts = [
        (first, batch_body("a1", [0, 1, 2, 3, 4], 1.0, ["loss", "grad_norm/total"], True, sent)),
        (first, batch_body("a2", [5, 6], 2.0, ["loss"], False, sent)),  # warm: state kept
        (second, batch_body("b1", [7, 8, 9], 3.0, ["loss", "lr"], True, sent)),  # lr: new
        # The first server again: steps 8 and 9 were written by the second (re-logged here),
        # and the block re-logs step 8; a summary from stale state would count them twice.
        (first, batch_body("a3", [8, 9, 10], 4.0, ["loss", "lr", "grad_norm/total"], True, sent)),
        (second, batch_body("b2", [11], 5.0, ["loss"], True, sent)),
        (first, batch_body("a4", [12, 13], 6.0, ["lr", "loss"], True, sent)),
        # A re-logged step that the first server's own state already knows of.
        (first, batch_body("a5", [13], 7.0, ["lr"], False, sent)),
    ]
    for send, body in posts:
        status, answer = send("POST", f"{base}/points", body)
        assert status == 200, answer
    for send in (first, second):
        status, listed = send("GET", f"{base}/series", None)
        assert status == 200
        got = {s.pop("name"): s for s in listed["series"]}  # type: ignore[index]
        assert got == {name: expected(points) for name, points in sent.items() if points}
        for name in ("loss", "lr", f"grad_norm/{LAYERS[1]}"):
            status, read = send("GET", f"{base}/points?name={name}", None)
            want = sent[name]
            assert read["step"] == sorted(want)  # type: ignore[index]
            tokens = [expected({0: want[s]})["last_value"] for s in sorted(want)]
            assert read["value"] == tokens  # type: ignore[index]


def _sender(client: TestClient) -> Send:
    def send(method: str, path: str, body: bytes | None) -> tuple[int, object]:
        response = client.request(method, path, content=body)
        return response.status_code, response.json()

    return send


@pytest.fixture
def two_clients(settings: Settings) -> Iterator[tuple[TestClient, TestClient]]:
    """Two apps on one database, as two server processes would be (each its own caches)."""
    first, second = create_app(settings), create_app(settings)
    with (
        TestClient(first, raise_server_exceptions=False, headers=JSON) as a,
        TestClient(second, raise_server_exceptions=False, headers=JSON) as b,
    ):
        yield a, b
    first.state.db.dispose()
    second.state.db.dispose()


def test_a_run_written_by_two_servers_in_turns_reads_back_exactly(
    two_clients: tuple[TestClient, TestClient],
) -> None:
    first, second = two_clients
    two_writers_scenario(_sender(first), _sender(second), "r1")


def test_a_warm_run_batch_reads_nothing_back_before_writing(
    two_clients: tuple[TestClient, TestClient],
) -> None:
    client = two_clients[0]
    send = _sender(client)
    sent: Sent = {}
    assert send("PUT", "/api/v1/runs/r1", b'{"project": "p", "name": "n"}')[0] == 200
    assert send("PUT", "/api/v1/runs/r1/layers", dumps({"layers": LAYERS}))[0] == 200
    body = batch_body("b1", [0, 1, 2], 1.0, ["loss", "grad_norm/total"], True, sent)
    assert send("POST", "/api/v1/runs/r1/points", body)[0] == 200
    statements: list[str] = []
    engine = client.app.state.db.engine  # type: ignore[attr-defined]

    def seen(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        statements.append(" ".join(statement.split()).lower())

    event.listen(engine, "before_cursor_execute", seen)
    try:
        body = batch_body("b2", [3, 4], 2.0, ["loss", "grad_norm/total"], False, sent)
        assert send("POST", "/api/v1/runs/r1/points", body)[0] == 200
        body = batch_body("b3", [5], 3.0, ["loss", "grad_norm/total"], True, sent)
        assert send("POST", "/api/v1/runs/r1/points", body)[0] == 200
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    reads = [s for s in statements if s.startswith("select")]
    # Only the declared layers are read (they decide which block members are stored as blocks).
    assert all(" from runs " in s and "layers" in s for s in reads), reads
    listed = {s.pop("name"): s for s in send("GET", "/api/v1/runs/r1/series", None)[1]["series"]}  # type: ignore[index]
    assert listed == {name: expected(points) for name, points in sent.items() if points}
