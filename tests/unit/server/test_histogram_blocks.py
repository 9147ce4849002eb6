"""Histograms sent as blocks (a family's layers over shared steps, wire version 3): stored and
read exactly as the per-name form stores them, refused whole with a 422 naming the field when
malformed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from trickscope_wire import (
    HISTOGRAM_BLOCKS_WIRE_VERSION,
    MATRIX_BLOCKS_WIRE_VERSION,
    HistogramBlock,
    HistogramColumns,
    PointBatch,
    dumps,
    encode_f64,
    encode_i64,
)

pytestmark = pytest.mark.timeout(120)

NAN, INF = float("nan"), float("inf")
LAYERS = ["conv.weight", "conv.bias", "fc.weight"]
BINS = 4


def _arrays(steps: list[int], seed: int) -> dict[str, np.ndarray]:
    """(layer, step) edges and non-finite counts, (layer, step, bin) counts; a NaN edge and an
    infinite one, as a tensor holding NaN or ±Inf gives."""
    rng = np.random.default_rng(seed)
    shape = (len(LAYERS), len(steps))
    lo, hi = -rng.random(shape), rng.random(shape)
    lo[1, 0], hi[2, -1] = NAN, INF
    return {
        "lo": lo,
        "hi": hi,
        "nonfinite": rng.integers(0, 3, shape).astype(float),
        "counts": rng.integers(0, 50, (*shape, BINS)).astype(float),
    }


def _block_body(batch_id: str, steps: list[int], arrays: dict[str, np.ndarray]) -> bytes:
    block = HistogramBlock(
        family="grad_hist",
        layers=LAYERS,
        bins=BINS,
        steps=encode_i64(steps),
        times=encode_f64([1e9 + s for s in steps]),
        **{key: encode_f64(value.ravel().tolist()) for key, value in arrays.items()},
    )
    batch = PointBatch(
        batch_id,
        [],
        wire_version=HISTOGRAM_BLOCKS_WIRE_VERSION,
        histogram_blocks=[block],
    )
    return dumps(batch)


def _per_name_body(batch_id: str, steps: list[int], arrays: dict[str, np.ndarray]) -> bytes:
    columns = [
        HistogramColumns(
            name=f"grad_hist/{layer}",
            bins=BINS,
            steps=encode_i64(steps),
            lo=encode_f64(arrays["lo"][row].tolist()),
            hi=encode_f64(arrays["hi"][row].tolist()),
            counts=encode_f64(arrays["counts"][row].ravel().tolist()),
            nonfinite=encode_f64(arrays["nonfinite"][row].tolist()),
            times=encode_f64([1e9 + s for s in steps]),
        )
        for row, layer in enumerate(LAYERS)
    ]
    return dumps(PointBatch(batch_id, [], histograms=columns))


def _read_all(client: TestClient, run_id: str) -> dict[str, Any]:
    names = client.get(f"/api/v1/runs/{run_id}/histograms/names").json()["names"]
    return {
        name: client.get(f"/api/v1/runs/{run_id}/histograms", params={"name": name}).json()
        for name in names
    }


def test_a_histogram_block_reads_back_as_the_per_name_form_and_a_relogged_step_is_replaced(
    client: TestClient, make_run: Callable[..., dict]
) -> None:
    for run_id, body in (("blocks", _block_body), ("names", _per_name_body)):
        make_run(run_id)
        for batch_id, steps, seed in (("b1", [0, 100], 1), ("b2", [100, 200], 2)):
            response = client.post(
                f"/api/v1/runs/{run_id}/points", content=body(batch_id, steps, _arrays(steps, seed))
            )
            assert response.status_code == 200, response.text
    got = _read_all(client, "blocks")
    assert got == _read_all(client, "names")
    assert sorted(got) == sorted(f"grad_hist/{layer}" for layer in LAYERS)
    second = _arrays([100, 200], 2)
    weight = got["grad_hist/fc.weight"]
    assert weight["step"] == [0, 100, 200]
    assert weight["counts"][1] == second["counts"][2, 0].tolist()  # the later batch won
    assert weight["hi"][2] == "Infinity"
    assert got["grad_hist/conv.bias"]["lo"][1] == "NaN"


def _good() -> dict[str, Any]:
    return {
        "family": "grad_hist",
        "layers": ["a", "b"],
        "bins": 2,
        "steps": encode_i64([1]),
        "times": encode_f64([0.0]),
        "lo": encode_f64([0.0, 0.0]),
        "hi": encode_f64([1.0, 1.0]),
        "nonfinite": encode_f64([0.0, 0.0]),
        "counts": encode_f64([1.0, 2.0, 3.0, 4.0]),
    }


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"family": "grad/hist"}, "family"),
        ({"layers": []}, "layers"),
        ({"layers": ["a", "a"]}, "layers"),
        ({"layers": ["a", ""]}, 1),
        ({"bins": 0}, "bins"),
        ({"bins": 2.0}, "bins"),
        ({"counts": encode_f64([1.0, 2.0])}, "counts"),
        ({"counts": encode_f64([1.0, NAN, 3.0, 4.0])}, "counts"),
        ({"nonfinite": encode_f64([0.0, INF])}, "counts"),
        ({"lo": encode_f64([0.0])}, "lo"),
        ({"times": encode_f64([0.0, 1.0])}, "times"),
        ({"times": encode_f64([NAN])}, "times"),
        ({"steps": "!!"}, "steps"),
        ({"hi": None}, "hi"),
    ],
)
def test_a_malformed_histogram_block_is_a_422_naming_the_field_and_stores_nothing(
    client: TestClient, make_run: Callable[..., dict], change: dict[str, Any], field: str | int
) -> None:
    make_run("r1")
    body = {
        "wire_version": HISTOGRAM_BLOCKS_WIRE_VERSION,
        "batch_id": "x",
        "series": [
            {
                "name": "loss",
                "steps": encode_i64([1]),
                "values": encode_f64([1.0]),
                "times": encode_f64([0.0]),
            }
        ],
        "histogram_blocks": [{**_good(), **change}],
    }
    response = client.post("/api/v1/runs/r1/points", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"][-1] == field
    assert client.get("/api/v1/runs/r1/series").json()["series"] == []
    assert client.get("/api/v1/runs/r1/histograms/names").json() == {"names": []}


def test_histogram_blocks_count_toward_the_batch_limit_and_need_their_wire_version(
    client: TestClient, make_run: Callable[..., dict]
) -> None:
    make_run("r1")
    huge = {
        **_good(),
        "layers": ["a"],
        "bins": 4096,
        "steps": encode_i64(range(25)),
        "times": encode_f64([0.0] * 25),
        "lo": encode_f64([0.0] * 25),
        "hi": encode_f64([1.0] * 25),
        "nonfinite": encode_f64([0.0] * 25),
        "counts": encode_f64([1.0] * 25 * 4096),  # 102,400 bins: over the test server's 100,000
    }
    body = {"wire_version": 3, "batch_id": "x", "series": [], "histogram_blocks": [huge]}
    response = client.post("/api/v1/runs/r1/points", json=body)
    assert response.status_code == 413, response.text
    good = {"wire_version": 3, "batch_id": "y", "series": [], "histogram_blocks": [_good()]}
    assert client.post("/api/v1/runs/r1/points", json=good).status_code == 200
    newer = {**good, "batch_id": "z", "wire_version": MATRIX_BLOCKS_WIRE_VERSION + 1}
    response = client.post("/api/v1/runs/r1/points", json=newer)
    assert response.status_code == 400
    assert "wire version" in response.json()["detail"]


def _one(name: str, step: int, bins: int, fill: float) -> bytes:
    """A per-name batch of one histogram of ``name`` at ``step``, every count ``fill``."""
    columns = HistogramColumns(
        name=name,
        bins=bins,
        steps=encode_i64([step]),
        lo=encode_f64([-fill]),
        hi=encode_f64([fill]),
        counts=encode_f64([fill] * bins),
        nonfinite=encode_f64([0.0]),
        times=encode_f64([1.0]),
    )
    return dumps(PointBatch(f"one-{name}-{step}-{fill}", [], histograms=[columns]))


def _filled(batch_id: str, steps: list[int], fill: float) -> bytes:
    arrays = _arrays(steps, 0)
    arrays["counts"][:] = fill
    return _block_body(batch_id, steps, arrays)


def test_the_later_write_of_a_step_wins_whichever_form_each_write_took(
    client: TestClient, make_run: Callable[..., dict]
) -> None:
    make_run("r1")
    name = "grad_hist/conv.weight"

    def post(body: bytes) -> None:
        response = client.post("/api/v1/runs/r1/points", content=body)
        assert response.status_code == 200, response.text

    post(_one(name, 1, BINS, 1.0))  # per name, then a block over the same step: the block
    post(_filled("blk-a", [1, 2, 3], 2.0))
    post(_one(name, 2, BINS, 3.0))  # a block, then per name: the row
    post(_filled("blk-b", [3], 4.0))  # a block, then a block: the later
    post(_one("grad_hist/only.rows", 5, 2, 5.0))  # a name never in a block
    got = client.get("/api/v1/runs/r1/histograms", params={"name": name}).json()
    assert got["step"] == [1, 2, 3]
    assert [row[0] for row in got["counts"]] == [2.0, 3.0, 4.0]
    assert got["hi"][1] == 3.0
    names = client.get("/api/v1/runs/r1/histograms/names").json()["names"]
    assert names == sorted([*(f"grad_hist/{layer}" for layer in LAYERS), "grad_hist/only.rows"])


def test_deleting_a_run_deletes_its_histogram_blocks_and_layouts(
    app: Any, client: TestClient, make_run: Callable[..., dict]
) -> None:
    make_run("r1")
    make_run("keep")
    for run_id in ("r1", "keep"):
        body = _block_body(f"b-{run_id}", [0], _arrays([0], 1))
        assert client.post(f"/api/v1/runs/{run_id}/points", content=body).status_code == 200
    assert client.delete("/api/v1/runs/r1").status_code == 204
    with app.state.db.reader() as session:
        for table in ("histogram_blocks", "histogram_layouts"):
            runs = session.execute(text(f"SELECT DISTINCT run_id FROM {table}")).scalars().all()
            assert runs == ["keep"], table
    make_run("r1")
    assert client.get("/api/v1/runs/r1/histograms/names").json() == {"names": []}
    kept = client.get("/api/v1/runs/keep/histograms", params={"name": "grad_hist/fc.weight"})
    assert kept.json()["step"] == [0]


def test_layers_named_in_any_script_come_back_from_the_block_layout(
    client: TestClient, make_run: Callable[..., dict]
) -> None:
    make_run("r1")
    layers = ["层.weight", 'quote".bias', "new\nline", "slash/inside"]
    block = HistogramBlock(
        family="weight_hist",
        layers=layers,
        bins=1,
        steps=encode_i64([7]),
        times=encode_f64([1.0]),
        lo=encode_f64([0.0] * 4),
        hi=encode_f64([1.0] * 4),
        nonfinite=encode_f64([0.0] * 4),
        counts=encode_f64([1.0, 2.0, 3.0, 4.0]),
    )
    batch = PointBatch(
        "b", [], wire_version=HISTOGRAM_BLOCKS_WIRE_VERSION, histogram_blocks=[block]
    )
    assert client.post("/api/v1/runs/r1/points", content=dumps(batch)).status_code == 200
    names = client.get("/api/v1/runs/r1/histograms/names").json()["names"]
    assert names == sorted(f"weight_hist/{layer}" for layer in layers)
    for i, layer in enumerate(layers):
        got = client.get("/api/v1/runs/r1/histograms", params={"name": f"weight_hist/{layer}"})
        assert got.json()["counts"] == [[float(i + 1)]], layer
