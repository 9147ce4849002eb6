"""Batch decoding at its limits: a decompressed body, point counts of blocks and histograms
exactly at the server's bound, and a block row that is not strict base64."""

from __future__ import annotations

import dataclasses
import gzip
from collections.abc import Callable

import numpy as np
import orjson
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from trickscope_server.errors import InvalidPayloadError, PayloadTooLargeError
from trickscope_server.services import ingest
from trickscope_server.services.ingest import decompress, parse_batch
from trickscope_server.services.ingest_histograms import MAX_HISTOGRAM_BINS
from trickscope_server.storage.models import SeriesRow
from trickscope_wire import (
    BLOCKS_WIRE_VERSION,
    HistogramColumns,
    PointBatch,
    SeriesColumns,
    StatBlock,
    dumps,
    encode_f64,
    encode_i64,
)

pytestmark = pytest.mark.timeout(30)


def _block(
    layers: list[str], steps: list[int], rows: list[str] | None = None, family: str = "grad_norm"
) -> StatBlock:
    values = rows or [encode_f64([float(j + s) for s in steps]) for j in range(len(layers))]
    return StatBlock(
        family=family,
        layers=layers,
        steps=encode_i64(steps),
        times=encode_f64([float(s) for s in steps]),
        values=values,
    )


def _blocks_body(block: StatBlock, batch_id: str = "b1") -> bytes:
    return dumps(
        PointBatch(batch_id=batch_id, series=[], wire_version=BLOCKS_WIRE_VERSION, blocks=[block])
    )


def test_a_body_one_byte_over_the_limit_once_inflated_is_413() -> None:
    assert decompress(gzip.compress(b"x" * 10), encoding="gzip", max_bytes=10) == b"x" * 10
    with pytest.raises(PayloadTooLargeError, match="limit of 10 bytes"):
        decompress(gzip.compress(b"x" * 11), encoding="gzip", max_bytes=10)


def test_a_block_counts_each_layer_at_each_step_against_the_point_limit() -> None:
    body = _blocks_body(_block(["a", "b", "c"], [1, 2, 3, 4]))
    assert parse_batch(body, max_points=12).points == 12
    with pytest.raises(PayloadTooLargeError, match="limit of 11 points"):
        parse_batch(body, max_points=11)
    # A block without steps holds no points (and is not an error).
    empty = parse_batch(_blocks_body(_block(["a", "b"], [])), max_points=1)
    assert empty.points == 0 and empty.blocks[0].values.shape == (2, 0)


def _histograms(bins: int, steps: list[int]) -> HistogramColumns:
    return HistogramColumns(
        name="weights/fc",
        bins=bins,
        steps=encode_i64(steps),
        lo=encode_f64([-1.0] * len(steps)),
        hi=encode_f64([1.0] * len(steps)),
        counts=encode_f64([1.0] * (bins * len(steps))),
        nonfinite=encode_f64([0.0] * len(steps)),
        times=encode_f64([0.0] * len(steps)),
    )


def _histograms_body(bins: int, steps: list[int]) -> bytes:
    return dumps(PointBatch(batch_id="h1", series=[], histograms=[_histograms(bins, steps)]))


def test_histogram_bins_exactly_at_the_point_limit_are_accepted() -> None:
    body = _histograms_body(4, [1, 2])
    assert parse_batch(body, max_points=8).histograms[0].counts.shape == (2, 4)
    with pytest.raises(PayloadTooLargeError, match="histogram bins"):
        parse_batch(body, max_points=7)


@pytest.mark.parametrize("bins", [1, MAX_HISTOGRAM_BINS])
def test_histograms_of_one_to_the_maximum_bins_are_accepted(bins: int) -> None:
    parsed = parse_batch(_histograms_body(bins, [1]), max_points=10_000)
    assert parsed.histograms[0].bins == bins


@pytest.mark.parametrize("bins", [0, MAX_HISTOGRAM_BINS + 1])
def test_histograms_outside_the_bins_range_are_422(bins: int) -> None:
    with pytest.raises(InvalidPayloadError, match=f"from 1 to {MAX_HISTOGRAM_BINS}"):
        parse_batch(_histograms_body(bins, [1]), max_points=10_000)


def test_a_block_row_with_a_character_outside_base64_is_422_naming_the_row() -> None:
    good = encode_f64([1.0, 2.0])
    bad = good[:4] + "!" + good[4:]  # lenient base64 would skip the "!" and accept the row
    with pytest.raises(InvalidPayloadError) as caught:
        parse_batch(_blocks_body(_block(["a", "b"], [1, 2], [good, bad])), max_points=100)
    assert caught.value.errors == [
        {"loc": ["body", "blocks", 0, "values", 1], "msg": caught.value.errors[0]["msg"]}
    ]
    assert "'grad_norm/b'" in caught.value.detail and "base64" in caught.value.detail


@pytest.mark.parametrize("form", ["one column", "a column per layer"])
def test_block_values_keep_non_finite_values_and_their_layer_order(form: str) -> None:
    values = [[float("nan"), 1.0], [float("inf"), -0.0], [-float("inf"), 5e-324]]
    rows = [encode_f64(row) for row in values]
    block = _block(["x", "y", "z"], [3, 9], rows)
    if form == "one column":
        block = dataclasses.replace(block, values=encode_f64([v for row in values for v in row]))
    batch = parse_batch(_blocks_body(block), max_points=100)
    parsed = batch.blocks[0]
    assert parsed.names == ["grad_norm/x", "grad_norm/y", "grad_norm/z"]
    assert parsed.values.tobytes() == np.array(values, dtype=np.float64).tobytes()


@pytest.mark.parametrize(
    ("change", "loc", "needle"),
    [
        ({"values": [encode_f64([1.0])]}, ["body", "blocks", 0], "a list of one column per"),
        ({"values": 5}, ["body", "blocks", 0], "one column of every layer's values"),
        ({"layers": "ab"}, ["body", "blocks", 0], "layers must be a list"),
        # One column (wire version 4) of the wrong size, or not base64.
        (
            {"values": encode_f64([1.0, 2.0, 3.0])},
            ["body", "blocks", 0, "values"],
            "24 bytes, its 2 layers x 2 steps need 32",
        ),
        ({"values": "AAA!"}, ["body", "blocks", 0, "values"], "not valid base64"),
        ({"layers": ["a", "a"]}, ["body", "blocks", 0, "layers"], "a layer is named twice"),
        ({"times": encode_f64([0.0])}, ["body", "blocks", 0], "steps and times differ"),
        ({"family": "grad/norm"}, ["body", "blocks", 0, "family"], "without '/'"),
        ({"layers": ["a", ""]}, ["body", "blocks", 0, "layers", 1], "non-empty string"),
    ],
)
def test_malformed_blocks_are_422_naming_where(
    change: dict[str, object], loc: list[str | int], needle: str
) -> None:
    block = {**dataclasses.asdict(_block(["a", "b"], [1, 2])), **change}
    raw = orjson.dumps(
        {"batch_id": "b1", "series": [], "wire_version": BLOCKS_WIRE_VERSION, "blocks": [block]}
    )
    with pytest.raises(InvalidPayloadError, match=needle) as caught:
        parse_batch(raw, max_points=100)
    assert caught.value.errors is not None and caught.value.errors[0]["loc"] == loc


def test_a_block_member_also_sent_as_a_series_keeps_both_columns(
    app: FastAPI, client: TestClient, make_run: Callable[..., dict[str, object]]
) -> None:
    """A batch naming one series twice (in a block and on its own) stores that block series by
    series: every point of both is read back, and the batch counts all of them. The batch's
    other block is stored as a block still."""
    make_run("r1")
    assert client.put("/api/v1/runs/r1/layers", json={"layers": ["a", "b"]}).status_code == 200
    batch = PointBatch(
        batch_id="b1",
        series=[
            SeriesColumns("grad_norm/a", encode_i64([3]), encode_f64([30.0]), encode_f64([3.0]))
        ],
        wire_version=BLOCKS_WIRE_VERSION,
        blocks=[_block(["a", "b"], [1, 2]), _block(["a", "b"], [1, 2], family="update_ratio")],
    )
    answer = client.post("/api/v1/runs/r1/points", content=dumps(batch))
    assert answer.json() == {"accepted": 9, "duplicate": False, "followed": False}
    for name, values in (
        ("grad_norm/a", [1.0, 2.0, 30.0]),
        ("grad_norm/b", [2.0, 3.0]),
        ("update_ratio/b", [2.0, 3.0]),
    ):
        read = client.get("/api/v1/runs/r1/points", params={"name": name}).json()
        assert read["value"] == values, read
    with app.state.db.reader() as session:
        families = session.execute(text("SELECT family FROM blocks WHERE run_id = 'r1'")).all()
    assert [f for (f,) in families] == ["update_ratio"]


def test_the_block_batch_that_reaches_the_bound_names_its_family_for_compaction(
    app: FastAPI, client: TestClient, make_run: Callable[..., dict[str, object]]
) -> None:
    make_run("r1")
    assert client.put("/api/v1/runs/r1/layers", json={"layers": ["a", "b"]}).status_code == 200
    db = app.state.db
    due = []
    for b in range(ingest.COMPACT_AFTER_CHUNKS):
        batch = ingest.parse_batch(_blocks_body(_block(["a", "b"], [b]), f"b{b}"), max_points=10)
        due.append(ingest.ingest_batch(db, run_id="r1", batch=batch).compact)
    with db.reader() as session:
        first = session.scalar(select(SeriesRow.id).where(SeriesRow.name == "grad_norm/a"))
    assert due[:-1] == [[]] * (ingest.COMPACT_AFTER_CHUNKS - 1)
    assert due[-1] == [first]


def test_an_empty_block_is_accepted_and_stores_nothing(
    app: FastAPI, client: TestClient, make_run: Callable[..., dict[str, object]]
) -> None:
    make_run("r1")
    assert client.put("/api/v1/runs/r1/layers", json={"layers": ["a"]}).status_code == 200
    answer = client.post("/api/v1/runs/r1/points", content=_blocks_body(_block(["a"], [])))
    assert answer.json() == {"accepted": 0, "duplicate": False, "followed": False}
    assert client.get("/api/v1/runs/r1/series").json() == {"series": []}
    with app.state.db.reader() as session:
        assert session.scalar(text("SELECT count(*) FROM blocks")) == 0


def test_a_series_logged_on_its_own_between_its_blocks_is_summarised_exactly(
    client: TestClient, make_run: Callable[..., dict[str, object]]
) -> None:
    make_run("r1")
    assert client.put("/api/v1/runs/r1/layers", json={"layers": ["a", "b"]}).status_code == 200
    assert client.post("/api/v1/runs/r1/points", content=_blocks_body(_block(["a", "b"], [1, 2])))
    later = PointBatch(
        batch_id="b2",
        series=[
            SeriesColumns("grad_norm/a", encode_i64([3]), encode_f64([30.0]), encode_f64([3.0]))
        ],
    )
    assert client.post("/api/v1/runs/r1/points", content=dumps(later)).status_code == 200
    # A block re-logging step 3 (value 3.0): the later write wins, step 3 is counted once.
    again = _blocks_body(_block(["a", "b"], [3]), "b3")
    assert client.post("/api/v1/runs/r1/points", content=again).status_code == 200
    listed = {s["name"]: s for s in client.get("/api/v1/runs/r1/series").json()["series"]}
    assert listed["grad_norm/a"] | {"name": None} == {
        "name": None,
        "count": 3,
        "first_step": 1,
        "last_step": 3,
        "last_value": 3.0,
        "min_value": 1.0,
        "max_value": 3.0,
        "first_nonfinite_step": None,
    }
