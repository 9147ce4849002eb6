"""The runs list filters and sorts by a per-layer statistic's latest value wherever its points
live: in blocks (as ``watch`` sends them), in the series' own row (older agents), or both, through
a real server on a SQLite file and on PostgreSQL, over REST and through ``trickscope.Api``.

NaN reads as missing and ±Inf as the extremes, exactly as for a series' own latest value."""

from __future__ import annotations

import json
import math
import urllib.parse
import urllib.request
from collections.abc import Iterator

import pytest

from tests.helpers import LiveServer, postgres_url, start_server, stop_server
from tests.unit.server.conftest import _pg_schema_url
from trickscope.client import Api
from trickscope_wire import (
    BLOCKS_WIRE_VERSION,
    LayersDeclare,
    PointBatch,
    RunCreate,
    SeriesColumns,
    StatBlock,
    dumps,
    encode_f64,
    encode_i64,
)

pytestmark = pytest.mark.timeout(120)

NAN, INF = math.nan, math.inf
LAYERS = ["fc1.weight", "fc2.weight"]
STAT = "grad_norm/fc1.weight"
PROJECT = "blockmetrics"

# run id -> how its grad_norm/fc1.weight was sent, in order: ("block" | "series", steps, values).
# fc2.weight always gets 1.0 in blocks; every run also logs loss (its own rank below).
SENT: dict[str, list[tuple[str, list[int], list[float]]]] = {
    "blk_hi": [("block", [0, 1, 2], [9.0, 1.0, 5.0])],
    "blk_lo": [("block", [0, 1], [0.1, 0.5]), ("block", [2], [0.5])],
    "blk_inf": [("block", [0, 1], [1.0, INF])],
    "blk_ninf": [("block", [0, 1], [1.0, -INF])],
    "blk_nan": [("block", [0, 1], [7.0, NAN])],
    "row_later": [("block", [0, 1, 2], [100.0, 100.0, 100.0]), ("series", [5, 6], [8.0, 2.0])],
    "block_later": [("series", [0, 1], [50.0, 50.0]), ("block", [2, 3], [9.0, 3.0])],
    "row_only": [("series", [0, 1], [0.0, 4.0])],
    "row_nan": [("series", [0, 1], [0.0, NAN])],
    "no_series": [],
}
LATEST = {
    "blk_hi": 5.0,
    "blk_lo": 0.5,
    "blk_inf": INF,
    "blk_ninf": -INF,
    "row_later": 2.0,
    "block_later": 3.0,
    "row_only": 4.0,
}
MISSING = {"blk_nan", "row_nan", "no_series"}


@pytest.fixture(
    scope="module",
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """A real server process on a SQLite file or a fresh PostgreSQL schema, holding ``SENT``
    (read only by the tests, so one per back end serves them all)."""
    tmp_path = tmp_path_factory.mktemp(request.param)
    if request.param == "sqlite":
        urls: Iterator[str] = iter([f"sqlite:///{tmp_path / 'trickscope.db'}"])
    else:
        urls = _pg_schema_url(postgres_url() or "")
    live = start_server(next(urls), tmp_path / "server.log")
    try:
        for rank, (run_id, parts) in enumerate(SENT.items()):
            _fill(live.url, run_id, parts, loss=float(rank))
        # Without declared layers, a block's series are run-level: the listing shows them.
        _fill(live.url, "undeclared", SENT["block_later"], loss=7.0, project="other", layers=False)
        yield live
    finally:
        stop_server(live)
        next(urls, None)  # drops the schema


def _send(url: str, method: str, path: str, payload: object) -> None:
    request = urllib.request.Request(
        f"{url}{path}", data=dumps(payload), method=method, headers=_JSON
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


_JSON = {"Content-Type": "application/json"}


def _fill(
    url: str,
    run_id: str,
    parts: list[tuple[str, list[int], list[float]]],
    loss: float,
    project: str = PROJECT,
    layers: bool = True,
) -> None:
    _send(url, "PUT", f"/api/v1/runs/{run_id}", RunCreate(project=project, name=run_id))
    if layers:
        _send(url, "PUT", f"/api/v1/runs/{run_id}/layers", LayersDeclare(layers=LAYERS))
    for k, (form, steps, values) in enumerate(parts):
        times = encode_f64([1e9 + s for s in steps])
        if form == "block":
            block = StatBlock(
                family="grad_norm",
                layers=LAYERS,
                steps=encode_i64(steps),
                times=times,
                values=[encode_f64(values), encode_f64([1.0] * len(steps))],
            )
            batch = PointBatch(
                batch_id=f"b{k}", series=[], blocks=[block], wire_version=BLOCKS_WIRE_VERSION
            )
        else:
            columns = SeriesColumns(STAT, encode_i64(steps), encode_f64(values), times)
            batch = PointBatch(batch_id=f"b{k}", series=[columns])
        _send(url, "POST", f"/api/v1/runs/{run_id}/points", batch)
    loss_batch = PointBatch(
        batch_id="loss",
        series=[SeriesColumns("loss", encode_i64([0]), encode_f64([loss]), encode_f64([1e9]))],
    )
    _send(url, "POST", f"/api/v1/runs/{run_id}/points", loss_batch)


def _pages(server: LiveServer, limit: int, **params: object) -> list[str]:
    """Run ids of every page of the listing, following ``next_cursor``."""
    seen: list[str] = []
    cursor = None
    for _ in range(50):
        query = {"project": PROJECT, "limit": limit, **params}
        if cursor:
            query["cursor"] = cursor
        url = f"{server.url}/api/v1/runs?{urllib.parse.urlencode(query, doseq=True)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            page = json.loads(response.read())
        seen += [run["id"] for run in page["runs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return seen
    raise AssertionError("pagination did not end")


def _page_runs(server: LiveServer, **params: object) -> list[dict[str, object]]:
    query = urllib.parse.urlencode({"project": PROJECT, "limit": 50, **params}, doseq=True)
    with urllib.request.urlopen(f"{server.url}/api/v1/runs?{query}", timeout=10) as response:
        return list(json.loads(response.read())["runs"])


def _token(value: float) -> float | str:
    """A latest value as the API writes it (non-finite ones as tokens)."""
    if math.isnan(value):
        return "NaN"
    return {INF: "Infinity", -INF: "-Infinity"}.get(value, value)


def _present_order(descending: bool) -> list[str]:
    return sorted(LATEST, key=LATEST.__getitem__, reverse=descending)


@pytest.mark.parametrize("descending", [False, True])
def test_sorting_by_a_per_layer_statistic_reads_its_block_points(
    server: LiveServer, descending: bool
) -> None:
    sort = f"{'-' if descending else ''}metric:{STAT}"
    whole = _pages(server, 50, sort=sort)
    # Values in order (±Inf at the ends), then the runs without a value, in both directions.
    assert whole[: len(LATEST)] == _present_order(descending)
    assert set(whole[len(LATEST) :]) == MISSING
    for limit in (1, 2, 3):
        assert _pages(server, limit, sort=sort) == whole  # cursors neither repeat nor skip


@pytest.mark.parametrize("descending", [False, True])
def test_a_listing_sorted_by_a_per_layer_statistic_shows_its_values(
    server: LiveServer, descending: bool
) -> None:
    sort = f"{'-' if descending else ''}metric:{STAT}"
    runs = _page_runs(server, sort=sort)
    shown = [(run["id"], run["latest"].get(STAT, "absent")) for run in runs]
    present = [(run_id, _token(LATEST[run_id])) for run_id in _present_order(descending)]
    assert shown[: len(LATEST)] == present  # ±Inf as tokens, at the ends
    # NaN last values are shown exactly, though they sort as missing; a run without the series
    # shows none.
    assert dict(shown[len(LATEST) :]) == {"blk_nan": "NaN", "row_nan": "NaN", "no_series": "absent"}
    ranks = {run_id: rank for rank, run_id in enumerate(SENT)}
    for run in runs:  # the run-level series stay as they were
        assert run["latest"]["loss"] == float(ranks[str(run["id"])])
        assert set(run["latest"]) <= {"loss", STAT}
        assert run["summary"] == {"loss": {"min": ranks[run["id"]], "max": ranks[run["id"]]}}


def test_a_listing_filtered_by_per_layer_statistics_shows_their_values(server: LiveServer) -> None:
    other = "grad_norm/fc2.weight"  # 1.0 in every block, absent from row-only runs
    runs = _page_runs(server, metric=[f"{STAT}>1", f"{other}>=1"], sort="name")
    want = ["blk_hi", "blk_inf", "block_later", "row_later"]
    assert [run["id"] for run in runs] == want
    for run in runs:
        expected = {"loss": float(list(SENT).index(run["id"])), STAT: _token(LATEST[run["id"]])}
        assert run["latest"] == {**expected, other: 1.0}
    # Sorted by one series and filtered by another: both shown.
    runs = _page_runs(server, metric=f"{other}=1", sort=f"-metric:{STAT}", limit=2)
    assert [(run["id"], run["latest"][STAT], run["latest"][other]) for run in runs] == [
        ("blk_inf", "Infinity", 1.0),
        ("blk_hi", 5.0, 1.0),
    ]


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        (">1", {"blk_hi", "blk_inf", "row_later", "block_later", "row_only"}),
        ("<1", {"blk_lo", "blk_ninf"}),
        ("<=0.5", {"blk_lo", "blk_ninf"}),
        (">=5", {"blk_hi", "blk_inf"}),
        ("=3", {"block_later"}),
        ("<1e308", {"blk_hi", "blk_lo", "blk_ninf", "row_later", "block_later", "row_only"}),
    ],
)
def test_filtering_by_a_per_layer_statistic_reads_its_block_points(
    server: LiveServer, condition: str, expected: set[str]
) -> None:
    for limit in (1, 50):
        got = _pages(server, limit, metric=f"{STAT}{condition}", sort="name")
        assert got == sorted(expected)


def test_metric_filters_and_sorts_combine_across_series(server: LiveServer) -> None:
    # Filter on the per-layer statistic, order by another series (loss: the rank in SENT).
    ranks = {run_id: rank for rank, run_id in enumerate(SENT)}
    want = sorted(("blk_hi", "blk_inf", "row_later", "block_later", "row_only"), key=ranks.get)
    for limit in (1, 2, 50):
        assert _pages(server, limit, metric=[f"{STAT}>1", "loss<100"], sort="metric:loss") == want
        assert _pages(server, limit, metric=f"{STAT}>1", sort="-metric:loss") == want[::-1]
        both = _pages(server, limit, metric=["loss>=1", f"{STAT}<10"], sort=f"metric:{STAT}")
        assert both == [r for r in _present_order(False) if r != "blk_inf" and ranks[r] >= 1]


def test_the_python_client_filters_and_sorts_by_block_points(server: LiveServer) -> None:
    with Api(server.url) as api:
        runs = api.runs(project=PROJECT, filters={f"metric.{STAT}": ">1"}, sort=f"-metric:{STAT}")
        assert [run.id for run in runs] == [
            "blk_inf",
            "blk_hi",
            "row_only",
            "block_later",
            "row_later",
        ]
        lowest = api.runs(project=PROJECT, sort=f"metric:{STAT}", limit=2)
        assert [run.id for run in lowest] == ["blk_ninf", "blk_lo"]


def test_the_listing_still_shows_run_level_series_only(server: LiveServer) -> None:
    url = f"{server.url}/api/v1/runs?project={PROJECT}&limit=50"
    with urllib.request.urlopen(url, timeout=10) as response:
        runs = {run["id"]: run for run in json.loads(response.read())["runs"]}
    assert set(runs) == set(SENT)
    for rank, run_id in enumerate(SENT):
        assert runs[run_id]["latest"] == {"loss": float(rank)}
        assert runs[run_id]["summary"] == {"loss": {"min": float(rank), "max": float(rank)}}
        assert runs[run_id]["last_step"] == 0


def test_the_listing_shows_block_series_of_a_run_without_declared_layers(
    server: LiveServer,
) -> None:
    with urllib.request.urlopen(f"{server.url}/api/v1/runs?project=other", timeout=10) as response:
        (run,) = json.loads(response.read())["runs"]
    assert run["latest"] == {"loss": 7.0, STAT: 3.0, "grad_norm/fc2.weight": 1.0}
    assert run["summary"] == {
        "loss": {"min": 7.0, "max": 7.0},
        STAT: {"min": 3.0, "max": 50.0},
        "grad_norm/fc2.weight": {"min": 1.0, "max": 1.0},
    }
    assert run["last_step"] == 3
    one = json.loads(urllib.request.urlopen(f"{server.url}/api/v1/runs/undeclared").read())
    assert one["latest"] == run["latest"] and one["summary"] == run["summary"]


def test_sparklines_find_a_series_whose_points_are_only_in_blocks(server: LiveServer) -> None:
    query = urllib.parse.urlencode(
        [("runs", "blk_hi,row_only,no_series"), ("name", "missing"), ("name", STAT)]
    )
    with urllib.request.urlopen(f"{server.url}/api/v1/sparklines?{query}", timeout=10) as response:
        lines = {line["run_id"]: line for line in json.loads(response.read())["runs"]}
    assert (lines["blk_hi"]["name"], lines["blk_hi"]["value"]) == (STAT, [9.0, 1.0, 5.0])
    assert (lines["row_only"]["name"], lines["row_only"]["value"]) == (STAT, [0.0, 4.0])
    assert lines["no_series"]["name"] is None
