"""Per-layer statistics sent as blocks (one column per statistic, layers x steps): every read is
exact and equal to what the per-series form gives, on both back ends, whatever the batches
re-log, and across compaction."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text

from trickscope_server.services import compact, query
from trickscope_server.services._chunks import Part, merge, merge_stacked
from trickscope_server.services.heatmap import load_layer_grid
from trickscope_wire import (
    BLOCKS_WIRE_VERSION,
    MATRIX_BLOCKS_WIRE_VERSION,
    PointBatch,
    SeriesColumns,
    StatBlock,
    dumps,
    encode_f64,
    encode_i64,
    finite_or_token,
)

pytestmark = pytest.mark.timeout(120)

NAN, INF = float("nan"), float("inf")
LAYERS = [f"block{i}.weight" for i in range(12)]
STATS = ("grad_norm", "update_ratio")
Points = dict[str, dict[int, float]]  # name -> {step: value}, the later write of a step kept
_COUNT_BLOCKS = text("SELECT count(*) FROM blocks WHERE run_id = :r")


def _values(steps: list[int], seed: int) -> np.ndarray:
    """layers x steps values with NaN, ±Inf, -0.0 and a subnormal in a few layers."""
    values = np.random.default_rng(seed).normal(size=(len(LAYERS), len(steps)))
    values[3, 1], values[7, 0], values[7, -1] = NAN, INF, -INF
    values[5, 0], values[6, -1] = -0.0, 5e-324
    return values


def _post_blocks(
    client: TestClient, run_id: str, batch_id: str, steps: list[int], seed: int, sent: Points
) -> dict[str, object]:
    """POST one block per statistic over ``steps``; record what was sent in ``sent``.

    An even ``seed`` sends each block's values as one column (wire version 4), an odd one as a
    column per layer (versions 2 and 3), so a run's batches mix both as agents of either do."""
    blocks = []
    one_column = seed % 2 == 0
    for k, stat in enumerate(STATS):
        values = _values(steps, seed + k)
        blocks.append(
            StatBlock(
                family=stat,
                layers=LAYERS,
                steps=encode_i64(steps),
                times=encode_f64([1e9 + s for s in steps]),
                values=encode_f64(values.ravel().tolist())
                if one_column
                else [encode_f64(row.tolist()) for row in values],
            )
        )
        for layer, row in zip(LAYERS, values.tolist(), strict=True):
            sent.setdefault(f"{stat}/{layer}", {}).update(zip(steps, row, strict=True))
    version = MATRIX_BLOCKS_WIRE_VERSION if one_column else BLOCKS_WIRE_VERSION
    batch = PointBatch(batch_id=batch_id, series=[], wire_version=version, blocks=blocks)
    response = client.post(f"/api/v1/runs/{run_id}/points", content=dumps(batch))
    assert response.status_code == 200, response.text
    answer: dict[str, object] = response.json()
    return answer


def _post_series(
    client: TestClient,
    run_id: str,
    batch_id: str,
    columns: dict[str, tuple[list[int], list[float]]],
) -> None:
    """POST in the per-series form older agents send."""
    batch = PointBatch(
        batch_id=batch_id,
        series=[
            SeriesColumns(n, encode_i64(s), encode_f64(v), encode_f64([1e9 + x for x in s]))
            for n, (s, v) in columns.items()
        ],
    )
    response = client.post(f"/api/v1/runs/{run_id}/points", content=dumps(batch))
    assert response.status_code == 200, response.text


def _same(got: list[object], want: list[float]) -> bool:
    """Equal as the wire gives them (tokens for non-finite values), -0.0 and NaN exactly."""
    if len(got) != len(want):
        return False
    for g, w in zip(got, want, strict=True):
        if math.isnan(w):
            if g != "NaN":
                return False
        elif math.isinf(w):
            if g != ("Infinity" if w > 0 else "-Infinity"):
                return False
        elif not (isinstance(g, float) and g == w and math.copysign(1, g) == math.copysign(1, w)):
            return False
    return True


def _check_reads(client: TestClient, run_id: str, sent: Points) -> None:
    """Every series read by name, the summaries and the heatmap equal a recount of ``sent``."""
    summaries = {s["name"]: s for s in client.get(f"/api/v1/runs/{run_id}/series").json()["series"]}
    for name, points in sent.items():
        steps = sorted(points)
        body = client.get(
            f"/api/v1/runs/{run_id}/points", params={"name": name, "wall_time": "true"}
        ).json()
        assert body["step"] == steps, name
        assert _same(body["value"], [points[s] for s in steps]), name
        assert body["wall_time"] == [1e9 + s for s in steps], name
        finite = [points[s] for s in steps if math.isfinite(points[s])]
        last = points[steps[-1]]
        summary = summaries[name]
        assert summary["count"] == len(steps), name
        assert (summary["first_step"], summary["last_step"]) == (steps[0], steps[-1]), name
        assert _same([summary["last_value"]], [last]), name
        assert summary["min_value"] == (min(finite) if finite else None), name
        assert summary["max_value"] == (max(finite) if finite else None), name
        bad = [s for s in steps if not math.isfinite(points[s])]
        assert summary["first_nonfinite_step"] == (bad[0] if bad else None), name
    for stat in STATS:
        heat = client.get(f"/api/v1/runs/{run_id}/heatmap", params={"stat": stat}).json()
        assert heat["layers"] == LAYERS
        for layer, row in zip(heat["layers"], heat["z"], strict=True):
            points = sent[f"{stat}/{layer}"]
            cells = dict(zip(heat["step"], row, strict=True))
            present = {s: v for s, v in cells.items() if v is not None}
            assert sorted(present) == sorted(points), layer
            assert _same(list(present.values()), [points[s] for s in present]), layer


def test_blocks_read_back_exactly_and_a_relogged_step_keeps_the_later_write(
    app: FastAPI, client: TestClient, make_run: Callable[..., dict]
) -> None:
    make_run("r1")
    client.put("/api/v1/runs/r1/layers", json={"layers": LAYERS})
    sent: Points = {}
    _post_blocks(client, "r1", "b1", [0, 1, 2, 3, 4], seed=1, sent=sent)
    # A resumed run re-logs steps 3 and 4 in blocks; an older agent re-logs step 5 of one layer.
    _post_blocks(client, "r1", "b2", [3, 4, 5, 6], seed=2, sent=sent)
    _post_series(client, "r1", "s1", {"grad_norm/block2.weight": ([5, 7], [-9.0, 9.0])})
    sent["grad_norm/block2.weight"].update({5: -9.0, 7: 9.0})
    _post_blocks(client, "r1", "b3", [8, 9], seed=3, sent=sent)
    _check_reads(client, "r1", sent)

    # The same batch id again changes nothing.
    again = _post_blocks(client, "r1", "b3", [8, 9], seed=99, sent={})
    assert again["duplicate"] is True
    _check_reads(client, "r1", sent)

    # Export holds the same points.
    rows = list(csv.reader(io.StringIO(client.get("/api/v1/runs/r1/export.csv").text)))[1:]
    exported: Points = {}
    for name, step, value, _ in rows:
        exported.setdefault(name, {})[int(step)] = float(value)
    assert exported.keys() == sent.keys()
    for name, points in sent.items():
        assert sorted(exported[name]) == sorted(points)
        got = [finite_or_token(exported[name][s]) for s in sorted(points)]
        assert _same(got, [points[s] for s in sorted(points)]), name

    # Compaction turns the blocks into chunks: every read stays the same, and a live client
    # resuming from a cursor gets each point once. (From cursors 0 and 1 the stream before
    # compaction also carries the writes that steps re-logged later replaced; compaction keeps
    # only the later ones.)
    db = app.state.db
    before = {c: query.read_events(db, run_id="r1", after=c, limit=1000) for c in (2, 3, 4)}
    assert compact.compact_run(db, run_id="r1") > 0
    with db.reader() as session:
        assert session.execute(_COUNT_BLOCKS, {"r": "r1"}).scalar() == 0
    _check_reads(client, "r1", sent)
    for cursor, events in before.items():
        assert events is not None
        after = query.read_events(db, run_id="r1", after=cursor, limit=1000)
        assert after is not None and after[1] == events[1], cursor
    resumed = query.read_events(db, run_id="r1", after=0, limit=1000)
    assert resumed is not None
    assert {n: c["step"] for n, c in resumed[1].items()} == {n: sorted(p) for n, p in sent.items()}


def test_a_series_named_in_a_block_and_on_its_own_in_one_batch_keeps_both_columns(
    client: TestClient, make_run: Callable[..., dict]
) -> None:
    """A member also sent as a series (a gradient that came or went between two layouts) makes
    its block go series by series: every point is kept, the later column winning a shared step."""
    make_run("r2")
    client.put("/api/v1/runs/r2/layers", json={"layers": LAYERS})
    name = "grad_norm/" + LAYERS[0]
    block = StatBlock(
        "grad_norm",
        LAYERS[:2],
        encode_i64([1, 2]),
        encode_f64([1.0, 2.0]),
        [
            encode_f64([1.0, 2.0]),
            encode_f64([3.0, NAN]),
        ],
    )
    batch = PointBatch(
        batch_id="b",
        series=[
            SeriesColumns(
                name, encode_i64([2, 3]), encode_f64([20.0, 30.0]), encode_f64([2.0, 3.0])
            )
        ],
        wire_version=BLOCKS_WIRE_VERSION,
        blocks=[block],
    )
    assert client.post("/api/v1/runs/r2/points", content=dumps(batch)).status_code == 200
    body = client.get("/api/v1/runs/r2/points", params={"name": name}).json()
    assert (body["step"], body["value"]) == ([1, 2, 3], [1.0, 2.0, 30.0])
    other = client.get("/api/v1/runs/r2/points", params={"name": "grad_norm/" + LAYERS[1]}).json()
    assert other["value"] == [3.0, "NaN"]
    # A block that repeats a step is stored series by series too: the later position wins.
    block = StatBlock(
        "weight_norm",
        LAYERS[:1],
        encode_i64([4, 4]),
        encode_f64([4.0, 4.5]),
        [encode_f64([1.0, 2.0])],
    )
    batch = PointBatch("b2", [], wire_version=BLOCKS_WIRE_VERSION, blocks=[block])
    assert client.post("/api/v1/runs/r2/points", content=dumps(batch)).status_code == 200
    repeated = "weight_norm/" + LAYERS[0]
    body = client.get("/api/v1/runs/r2/points", params={"name": repeated}).json()
    assert (body["step"], body["value"]) == ([4], [2.0])
    (summary,) = [
        s for s in client.get("/api/v1/runs/r2/series").json()["series"] if s["name"] == repeated
    ]
    assert (summary["count"], summary["last_value"]) == (1, 2.0)


def test_a_statistic_in_two_blocks_of_a_batch_goes_series_by_series_a_total_beside_it_not(
    app: FastAPI, client: TestClient, make_run: Callable[..., dict]
) -> None:
    """Two blocks of one statistic sharing a member store every point series by series; a
    series of the statistic that is no member (``grad_norm/total``) leaves its block a block."""
    make_run("r3")
    client.put("/api/v1/runs/r3/layers", json={"layers": LAYERS})
    total = SeriesColumns("grad_norm/total", encode_i64([1]), encode_f64([9.0]), encode_f64([1.0]))

    def block(layers: list[str], steps: list[int], first: float) -> StatBlock:
        values = [first + i for i in range(len(layers) * len(steps))]
        times = encode_f64([float(s) for s in steps])
        return StatBlock("grad_norm", layers, encode_i64(steps), times, encode_f64(values))

    two = [block(LAYERS[:2], [1, 2], 1.0), block(LAYERS[1:3], [3], 10.0)]
    batch = PointBatch("b1", [total], wire_version=MATRIX_BLOCKS_WIRE_VERSION, blocks=two)
    assert client.post("/api/v1/runs/r3/points", content=dumps(batch)).status_code == 200
    with app.state.db.reader() as session:
        assert session.execute(_COUNT_BLOCKS, {"r": "r3"}).scalar() == 0

    def read(layer: str) -> tuple[list[int], list[float]]:
        body = client.get("/api/v1/runs/r3/points", params={"name": layer}).json()
        return body["step"], body["value"]

    assert read("grad_norm/" + LAYERS[0]) == ([1, 2], [1.0, 2.0])
    assert read("grad_norm/" + LAYERS[1]) == ([1, 2, 3], [3.0, 4.0, 10.0])
    assert read("grad_norm/" + LAYERS[2]) == ([3], [11.0])
    alone = block(LAYERS[:2], [4, 5], 20.0)
    batch = PointBatch("b2", [total], wire_version=MATRIX_BLOCKS_WIRE_VERSION, blocks=[alone])
    assert client.post("/api/v1/runs/r3/points", content=dumps(batch)).status_code == 200
    with app.state.db.reader() as session:
        assert session.execute(_COUNT_BLOCKS, {"r": "r3"}).scalar() == 1
    assert read("grad_norm/" + LAYERS[1]) == ([1, 2, 3, 4, 5], [3.0, 4.0, 10.0, 22.0, 23.0])
    assert read("grad_norm/total") == ([1], [9.0])


_MALFORMED: list[dict[str, object]] = [
    {"family": "a/b"},
    {"layers": ["x", "x"]},
    {"layers": ["x", ""]},
    {"layers": ["x", 3]},
    {"values": ["AAAAAAAA8D8=", "not base64!"]},
    {"values": ["AAAAAAAA8D8="]},
    {"values": ["AAAAAAAA8D8=", "AAAAAAAA8D8AAAAAAADwPw=="]},
    {"steps": "AQAAAAAAAAACAAAAAAAAAA=="},
]


def test_a_malformed_block_is_a_422(client: TestClient, make_run: Callable[..., dict]) -> None:
    make_run("r3")
    for i, change in enumerate(_MALFORMED):
        block = {
            "family": "grad_norm",
            "layers": ["x", "y"],
            "steps": encode_i64([1]),
            "times": encode_f64([1.0]),
            "values": [encode_f64([1.0]), encode_f64([2.0])],
        } | change
        body = {
            "batch_id": f"b{i}",
            "series": [],
            "blocks": [block],
            "wire_version": BLOCKS_WIRE_VERSION,
        }
        response = client.post("/api/v1/runs/r3/points", json=body)
        assert response.status_code == 422, (change, response.text)
    assert client.get("/api/v1/runs/r3/series").json()["series"] == []


def test_stacked_compaction_equals_merging_each_series() -> None:
    """Blocks of one layout compact as one matrix: the rows equal ``merge`` of each member's
    rows, digests (300 steps: past the digest's minimum) and non-finite edges included."""
    rng = np.random.default_rng(5)
    steps = [np.arange(i * 100, (i + 1) * 100, dtype=np.int64) for i in range(3)]
    times = [s.astype(np.float64) + 0.5 for s in steps]
    values = [rng.normal(size=(4, 100)) for _ in steps]
    values[1][2, 7], values[2][3, 0], values[0][3, 99] = NAN, INF, -INF
    members = np.array([11, 12, 13, 14], dtype=np.int64)
    seqs = [5, 8, 9]
    rows = merge_stacked(
        run_id="r", members=members, seqs=seqs, steps=steps, times=times, values=values
    )
    for row, (i, sid) in zip(rows, enumerate(members.tolist()), strict=True):
        parts = [
            Part(q, s, v[i], t, np.full(s.size, q, dtype=np.int64))
            for q, s, v, t in zip(seqs, steps, values, times, strict=True)
        ]
        want = merge(parts, run_id="r", series_id=sid, seq_lo=5)
        assert row.keys() == want.keys()
        for key, value in want.items():
            assert row[key] == value or (value != value and row[key] != row[key]), (sid, key)


def test_blocks_of_one_layout_compact_into_chunks_that_read_the_same(
    app: FastAPI, client: TestClient, make_run: Callable[..., dict]
) -> None:
    make_run("r4")
    client.put("/api/v1/runs/r4/layers", json={"layers": LAYERS})
    sent: Points = {}
    for i in range(4):
        _post_blocks(client, "r4", f"b{i}", list(range(i * 3, i * 3 + 3)), seed=i, sent=sent)
    db = app.state.db
    before = {c: query.read_events(db, run_id="r4", after=c, limit=1000) for c in range(4)}
    assert compact.compact_run(db, run_id="r4") == 8  # 4 batches x 2 statistics
    _check_reads(client, "r4", sent)
    for cursor, events in before.items():
        after = query.read_events(db, run_id="r4", after=cursor, limit=1000)
        assert events is not None and after is not None and after[1] == events[1], cursor


def test_logged_metrics_sent_as_a_block_sort_the_runs_table_by_their_last_value(
    client: TestClient, make_run: Callable[..., dict]
) -> None:
    """Members that are not layers of the run (``train/loss`` from ``run.log``) keep their
    summary in their series row, which the runs table sorts and filters by."""
    for run_id, last in (("a", 3.0), ("b", 1.0), ("c", 2.0)):
        make_run(run_id)
        block = StatBlock(
            "train",
            ["loss", "acc"],
            encode_i64([1, 2]),
            encode_f64([1.0, 2.0]),
            [encode_f64([9.0, last]), encode_f64([0.5, 0.5])],
        )
        batch = PointBatch("b", [], wire_version=BLOCKS_WIRE_VERSION, blocks=[block])
        assert client.post(f"/api/v1/runs/{run_id}/points", content=dumps(batch)).status_code == 200
    page = client.get("/api/v1/runs", params={"sort": "metric:train/loss"}).json()
    assert [r["id"] for r in page["runs"]] == ["b", "c", "a"]
    below = client.get("/api/v1/runs", params={"metric": "train/loss<2.5"}).json()
    assert sorted(r["id"] for r in below["runs"]) == ["b", "c"]


def test_a_measure_of_each_layer_is_stored_as_a_block_and_reads_back_exactly(
    client: TestClient, make_run: Callable[..., dict]
) -> None:
    """``opt/eps_dominance/<layer>`` (a statistic with a measure before the layer) is stored as a
    block of family ``opt``; a member whose layer was not declared keeps its own row."""
    make_run("r5")
    client.put("/api/v1/runs/r5/layers", json={"layers": LAYERS})
    sent: Points = {}
    members = [f"eps_dominance/{layer}" for layer in LAYERS] + ["eps_dominance/not_a_layer"]
    for i, steps in enumerate(([0, 50], [100, 150])):
        values = np.random.default_rng(i).random(size=(len(members), len(steps)))
        values[2, 0] = NAN
        block = StatBlock(
            "opt",
            members,
            encode_i64(steps),
            encode_f64([1e9 + s for s in steps]),
            [encode_f64(row.tolist()) for row in values],
        )
        batch = PointBatch(f"b{i}", [], wire_version=BLOCKS_WIRE_VERSION, blocks=[block])
        response = client.post("/api/v1/runs/r5/points", content=dumps(batch))
        assert response.status_code == 200, response.text
        for member, row in zip(members, values.tolist(), strict=True):
            sent.setdefault(f"opt/{member}", {}).update(zip(steps, row, strict=True))
    with client.app.state.db.reader() as session:  # type: ignore[attr-defined]
        assert session.execute(_COUNT_BLOCKS, {"r": "r5"}).scalar_one() == 2
    summaries = {s["name"]: s for s in client.get("/api/v1/runs/r5/series").json()["series"]}
    for name, points in sent.items():
        steps = sorted(points)
        body = client.get("/api/v1/runs/r5/points", params={"name": name}).json()
        assert body["step"] == steps, name
        assert _same(body["value"], [points[s] for s in steps]), name
        assert summaries[name]["count"] == len(steps), name
        assert _same([summaries[name]["last_value"]], [points[steps[-1]]]), name
    assert summaries[f"opt/eps_dominance/{LAYERS[2]}"]["first_nonfinite_step"] == 0


def test_a_measure_of_each_layer_reads_as_one_grid_as_health_reads_it(
    client: TestClient, make_run: Callable[..., dict]
) -> None:
    """``opt/eps_dominance`` read as a layer grid (one query, as the health view reads it) holds
    exactly the family ``opt`` members of that measure, equal to each series read on its own."""
    make_run("r6")
    client.put("/api/v1/runs/r6/layers", json={"layers": LAYERS})
    members = [f"eps_dominance/{layer}" for layer in LAYERS] + [f"other/{LAYERS[0]}"]
    values = np.random.default_rng(3).random(size=(len(members), 2))
    values[1, 1] = INF
    block = StatBlock(
        "opt",
        members,
        encode_i64([0, 50]),
        encode_f64([1e9, 1e9 + 50]),
        [encode_f64(row.tolist()) for row in values],
    )
    batch = PointBatch("b0", [], wire_version=BLOCKS_WIRE_VERSION, blocks=[block])
    assert client.post("/api/v1/runs/r6/points", content=dumps(batch)).status_code == 200
    db = client.app.state.db  # type: ignore[attr-defined]
    with db.reader() as session:
        grid = load_layer_grid(
            session, run_id="r6", stat="opt/eps_dominance", declared=LAYERS, points=2000
        )
        assert grid.layers == LAYERS  # not "other/...", a measure of the same family
        for layer in LAYERS:
            name = f"opt/eps_dominance/{layer}"
            series_id = session.execute(
                text("SELECT id FROM series WHERE run_id = 'r6' AND name = :n"), {"n": name}
            ).scalar_one()
            steps, want = query.load_series(
                session, run_id="r6", name=name, series_id=series_id, cursor=10**9, points=2000
            )
            row = grid.rows[layer]
            assert grid.steps[grid.filled[row]].tolist() == steps.tolist() == [0, 50]
            got = grid.cells[row][grid.filled[row]]
            assert got.tobytes() == want.tobytes() == values[LAYERS.index(layer)].tobytes()
