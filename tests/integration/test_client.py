"""``trickscope.Api`` against a real server: the same runs as the REST API, history exactly as
logged (NaN and ±Inf included) through both the JSON pages and the Parquet export, findings,
exports, and a server that requires a token."""

from __future__ import annotations

import json
import math
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import trickscope
from tests.helpers import LiveServer, free_port, start_server, stop_server
from trickscope.client import Api, ApiError, Finding, RunRecord, ServerUnreachable

pytestmark = pytest.mark.timeout(180)

# (name, config, tags, final loss) of the sweep the listing tests read.
SWEEP = [
    ("a", {"lr": 0.1, "optimizer": {"name": "sgd"}, "seed": 1}, ["base"], 0.9),
    ("b", {"lr": 0.01, "optimizer": {"name": "adamw"}, "seed": "1"}, ["base", "x"], 0.3),
    ("c", {"lr": 0.001, "optimizer": {"name": "sgd"}, "seed": 2}, [], 0.5),
    ("d", {"lr": 0.1, "optimizer": {"name": "adamw"}, "seed": 3}, ["x"], 0.05),
    ("e", {"lr": 0.03, "optimizer": {"name": "sgd"}}, ["base"], 0.2),
]
STEPS = 3000
NAN_STEP, INF_STEP, NEG_INF_STEP = 7, 11, 13


def loss_at(step: int) -> float:
    if step == NAN_STEP:
        return math.nan
    if step == INF_STEP:
        return math.inf
    if step == NEG_INF_STEP:
        return -math.inf
    return 1.0 / (step + 1) + step * 1e-7


def acc_steps() -> list[int]:
    """Bunched steps: a few early points, then a dense block (windows must split again)."""
    return list(range(0, 1000, 50)) + list(range(1001, 2501))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("client")
    live = start_server(f"sqlite:///{tmp / 'trickscope.db'}", tmp / "server.log")
    yield live
    stop_server(live)


@pytest.fixture(scope="module")
def sweep(server: LiveServer) -> dict[str, str]:
    """The sweep's runs (project ``sweep``) and one of another project; name -> run id."""
    ids = {}
    for name, config, tags, final in SWEEP:
        with trickscope.init(
            project="sweep", name=name, config=config, tags=tags, url=server.url
        ) as run:
            for step in range(3):
                run.log({"loss/train": final + (2 - step), "acc": 1 - final}, step=step)
        ids[name] = run.id
    with trickscope.init(project="other", name="o", url=server.url, config={"lr": 0.1}) as run:
        run.log({"loss/train": 0.01}, step=0)
    ids["o"] = run.id
    return ids


@pytest.fixture(scope="module")
def history_run(server: LiveServer) -> str:
    """A run whose loss holds NaN, +Inf and -Inf, with a sparse, bunched second series."""
    bunched = set(acc_steps())
    with trickscope.init(project="history", name="h", url=server.url) as run:
        for step in range(STEPS):
            values = {"loss/train": loss_at(step), "lr": 0.1 * 0.999**step}
            if step in bunched:
                values["eval/acc"] = step / STEPS
            run.log(values, step=step)
    return run.id


def rest_ids(server: LiveServer, **params: Any) -> list[str]:
    """Run ids of a listing read straight from the REST API, following every cursor."""
    ids: list[str] = []
    cursor = None
    while True:
        query = {**params, "limit": 2, **({"cursor": cursor} if cursor else {})}
        url = f"{server.url}/api/v1/runs?{urllib.parse.urlencode(query, doseq=True)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            page = json.loads(response.read())
        ids += [r["id"] for r in page["runs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return ids


LISTINGS = [
    ({"project": "sweep"}, {"project": "sweep"}),
    ({"project": "sweep", "sort": "name"}, {"project": "sweep", "sort": "name"}),
    (
        {"project": "sweep", "sort": "-config.lr"},
        {"project": "sweep", "sort": "-config:lr"},
    ),
    (
        {"sort": "metric:loss/train", "filters": {"config.lr": 0.1}},
        {"sort": "metric:loss/train", "config": ["lr:0.1"]},
    ),
    (
        {"filters": {"config.optimizer.name": "sgd", "metric.loss/train": "<0.6"}},
        {"config": ["optimizer.name:sgd"], "metric": ["loss/train<0.6"]},
    ),
    (
        {"filters": ["metric=acc>0.4", "metric=acc<=0.95", "tag=base"]},
        {"metric": ["acc>0.4", "acc<=0.95"], "tag": ["base"]},
    ),
    ({"tags": ["base", "x"]}, {"tag": ["base", "x"]}),
    (
        {"filters": {"metric.loss/train": [">0.1", "<0.6"]}},
        {"metric": ["loss/train>0.1", "loss/train<0.6"]},
    ),
]


@pytest.mark.parametrize(("kwargs", "params"), LISTINGS)
def test_runs_are_the_rest_apis_runs_in_its_order(
    server: LiveServer, sweep: dict[str, str], kwargs: dict, params: dict
) -> None:
    api = Api(server.url)
    api.page_size = 2  # several pages: the listing follows next_cursor
    got = [r.id for r in api.runs(**kwargs)]
    want = rest_ids(server, **params)
    assert got == want
    assert got, "every listing here matches some runs"


def test_filters_mean_what_they_say(server: LiveServer, sweep: dict[str, str]) -> None:
    api = Api(server.url)
    names = lambda runs: sorted(r.name for r in runs)  # noqa: E731
    assert names(api.runs(filters={"config.lr": 0.1})) == ["a", "d", "o"]
    assert names(api.runs(project="sweep", filters={"config.lr": 0.1})) == ["a", "d"]
    # A number and a string of the same digits are different config values.
    assert names(api.runs(filters={"config.seed": 1})) == ["a"]
    assert names(api.runs(filters={"config.seed": "1"})) == ["b"]
    assert names(api.runs(filters={"metric.loss/train": 0.05})) == ["d"]
    assert names(api.runs(project="sweep", filters={"metric.acc": (">=", 0.7)})) == ["b", "d", "e"]
    assert names(api.runs(project="sweep", status="finished")) == list("abcde")
    assert names(api.runs(project="sweep", tags=["x"])) == ["b", "d"]


def test_limit_and_lazy_pages(server: LiveServer, sweep: dict[str, str]) -> None:
    api = Api(server.url)
    api.page_size = 2
    listing = api.runs(project="sweep", sort="name")
    assert listing[0].name == "a"
    assert "more on the server" in repr(listing)  # one page read so far
    assert [r.name for r in listing] == list("abcde")
    assert len(listing) == 5
    assert [r.name for r in api.runs(project="sweep", sort="name", limit=3)] == list("abc")
    assert len(api.runs(project="sweep", limit=0)) == 0


def test_a_run_record_holds_the_runs_fields(server: LiveServer, sweep: dict[str, str]) -> None:
    record = Api(server.url).run(sweep["b"])
    assert isinstance(record, RunRecord)
    assert (record.id, record.name, record.project, record.status) == (
        sweep["b"],
        "b",
        "sweep",
        "finished",
    )
    assert record.config == {"lr": 0.01, "optimizer": {"name": "adamw"}, "seed": "1"}
    assert record.tags == ["base", "x"]
    assert record.latest == {"loss/train": 0.3, "acc": 0.7}
    assert record.created_at is not None and record.created_at.tzinfo is not None
    assert record.duration is not None and 0 <= record.duration < 60
    summaries = {s.name: s for s in record.series()}
    assert summaries["loss/train"].count == 3
    assert summaries["loss/train"].last_step == 2 == record.last_step


def test_runs_frame_flattens_config_and_latest_values(
    server: LiveServer, sweep: dict[str, str]
) -> None:
    api = Api(server.url)
    frame = api.runs_frame(project="sweep", sort="name")
    assert list(frame.index) == [sweep[n] for n in "abcde"]
    assert frame["config.lr"].tolist() == [0.1, 0.01, 0.001, 0.1, 0.03]
    assert frame["config.optimizer.name"].tolist() == ["sgd", "adamw", "sgd", "adamw", "sgd"]
    assert frame["latest.loss/train"].tolist() == [0.9, 0.3, 0.5, 0.05, 0.2]
    assert frame["name"].tolist() == list("abcde")
    assert frame["last_step"].tolist() == [2] * 5
    rows = api.runs(project="sweep", sort="name").to_frame(as_frame=False)
    assert rows[0]["config.optimizer.name"] == "sgd" and rows[0]["id"] == sweep["a"]


def test_server_refusals_raise_api_errors(server: LiveServer, sweep: dict[str, str]) -> None:
    api = Api(server.url)
    with pytest.raises(ApiError) as missing:
        api.run("no-such-run")
    assert missing.value.status == 404 and "no-such-run" in missing.value.detail
    with pytest.raises(ApiError) as bad_sort:
        list(api.runs(sort="bogus"))
    assert bad_sort.value.status == 422
    assert bad_sort.value.title == "Invalid request"
    assert "sort 'bogus' must be one of" in bad_sort.value.detail
    assert bad_sort.value.errors[0]["loc"] == ["query", "sort"]
    with pytest.raises(ValueError, match="config.<dotted.key> or metric.<name>"):
        api.runs(filters={"lr": 0.1})
    with pytest.raises(KeyError, match="no series 'nope'"):
        api.run(sweep["a"]).history(["loss/train", "nope"])
    with pytest.raises(ServerUnreachable, match="could not reach"):
        Api(f"http://127.0.0.1:{free_port()}").run("x")


def assert_same_floats(got: Any, want: list[float]) -> None:
    got = np.asarray(got, dtype=np.float64)
    want_array = np.asarray(want, dtype=np.float64)
    assert got.shape == want_array.shape
    assert np.array_equal(got, want_array, equal_nan=True)  # ±Inf compare as themselves


@pytest.mark.parametrize("source", ["json", "parquet"])
def test_history_is_every_point_as_logged(
    server: LiveServer, history_run: str, source: str
) -> None:
    api = Api(server.url)
    api.page_points = 500  # many exact pages on the JSON path
    record = api.run(history_run)
    frame = record.history(["loss/train", "lr", "eval/acc"], source=source)
    assert isinstance(frame, pd.DataFrame)
    assert frame.index.name == "step" and frame.index.dtype == np.int64
    assert frame.index.tolist() == list(range(STEPS))
    assert list(frame.columns) == ["loss/train", "lr", "eval/acc"]
    assert_same_floats(frame["loss/train"], [loss_at(s) for s in range(STEPS)])
    assert frame["loss/train"][INF_STEP] == math.inf
    assert frame["loss/train"][NEG_INF_STEP] == -math.inf
    assert math.isnan(frame["loss/train"][NAN_STEP])
    assert frame["lr"].tolist() == [0.1 * 0.999**s for s in range(STEPS)]
    acc = frame["eval/acc"].dropna()
    assert acc.index.tolist() == acc_steps()
    assert acc.tolist() == [s / STEPS for s in acc_steps()]


def test_both_sources_agree_on_windows_wall_times_and_the_dict_form(
    server: LiveServer, history_run: str
) -> None:
    api = Api(server.url)
    api.page_points = 400
    record = api.run(history_run)
    names = ["loss/train", "eval/acc"]
    by_json = record.history(names, start=5, end=1200, wall_time=True, source="json")
    by_parquet = record.history(names, start=5, end=1200, wall_time=True, source="parquet")
    pd.testing.assert_frame_equal(by_json, by_parquet)
    assert by_json.index[0] == 5 and by_json.index[-1] == 1200
    times = by_json["loss/train:wall_time"]
    assert times.notna().all() and times.is_monotonic_increasing

    as_dict = record.history(names, start=5, end=1200, source="json", as_frame=False)
    assert as_dict["step"] == list(range(5, 1201))
    assert as_dict["eval/acc"][0] is None  # step 5 has no eval point: None, not NaN
    assert as_dict["eval/acc"][45] == 50 / STEPS
    assert math.isnan(as_dict["loss/train"][NAN_STEP - 5])
    assert_same_floats(as_dict["loss/train"], by_json["loss/train"].tolist())


def test_auto_source_and_a_points_budget(server: LiveServer, history_run: str) -> None:
    record = Api(server.url).run(history_run)
    every = record.history("lr")  # auto: whichever source, the same points
    assert every["lr"].tolist() == [0.1 * 0.999**s for s in range(STEPS)]
    coarse = record.history(["loss/train", "lr"], points=100)
    assert 0 < coarse["lr"].count() <= 100
    # The budget keeps the extremes: the non-finite loss points survive the downsampling.
    loss = coarse["loss/train"]
    assert loss[INF_STEP] == math.inf and loss[NEG_INF_STEP] == -math.inf
    with pytest.raises(ValueError, match="leave points=None"):
        record.history("lr", points=100, source="parquet")


def test_history_of_no_names_is_every_run_level_series(server: LiveServer) -> None:
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    with trickscope.init(project="watched", url=server.url) as run:
        run.watch(model, optimizer, every=1)
        for step in range(5):
            loss = model(torch.randn(16, 4)).square().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            run.log({"loss/train": loss.detach()}, step=step)
    record = Api(server.url).run(run.id)
    every = {s.name for s in record.series()}
    assert "grad_norm/0.weight" in every and "grad_norm/total" in every
    frame = record.history()
    assert {"loss/train", "grad_norm/total", "lr/group0"} <= set(frame.columns)
    assert not any(name.endswith(("0.weight", "0.bias")) for name in frame.columns)
    assert frame.index.tolist() == list(range(5))


def test_findings_name_the_first_nonfinite_loss(server: LiveServer, history_run: str) -> None:
    findings = Api(server.url).run(history_run).findings()
    assert all(isinstance(f, Finding) for f in findings)
    loss = next(f for f in findings if f.check == "nonfinite-loss")
    assert loss.severity == "error"
    assert loss.step == NAN_STEP
    assert "loss/train" in loss.title
    assert loss.remedy and loss.source == "server"


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_export_streams_every_point_to_disk(
    server: LiveServer, history_run: str, tmp_path: Path, fmt: str
) -> None:
    seen: list[int] = []
    path = (
        Api(server.url)
        .run(history_run)
        .export(tmp_path / f"run.{fmt}", format=fmt, progress=lambda size, total: seen.append(size))
    )
    assert path == tmp_path / f"run.{fmt}" and not (tmp_path / f"run.{fmt}.part").exists()
    assert sum(seen) == path.stat().st_size
    if fmt == "parquet":
        table = pd.read_parquet(path)
    else:
        table = pd.read_csv(path)
    loss = table[table["series"] == "loss/train"].set_index("step")["value"]
    assert_same_floats(loss.sort_index(), [loss_at(s) for s in range(STEPS)])
    assert len(table) == 2 * STEPS + len(acc_steps())


@pytest.fixture
def token_server(tmp_path: Path) -> Iterator[LiveServer]:
    """A server that requires a token, and caps requests at 1000 points."""
    env = {"TRICKSCOPE_TOKEN": "env-" + "t" * 40, "TRICKSCOPE_MAX_POINTS": "1000"}
    live = start_server(f"sqlite:///{tmp_path / 'auth.db'}", tmp_path / "auth.log", env=env)
    yield live
    stop_server(live)


def test_a_token_server_needs_the_token(
    token_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "env-" + "t" * 40
    with trickscope.init(project="secure", url=token_server.url, token=secret) as run:
        for step in range(2500):
            run.log({"loss/train": 1.0 / (step + 1)}, step=step)

    monkeypatch.delenv("TRICKSCOPE_TOKEN", raising=False)
    with pytest.raises(ApiError) as refused:
        list(Api(token_server.url).runs())
    assert refused.value.status == 401
    with pytest.raises(ApiError) as wrong:
        Api(token_server.url, token="tsk_" + "x" * 43).run(run.id)
    assert wrong.value.status == 401

    api = Api(token_server.url, token=secret)
    assert [r.id for r in api.runs()] == [run.id]
    # 100k points per page is over this server's cap: the client pages under it.
    history = api.run(run.id).history("loss/train", source="json")
    assert history["loss/train"].tolist() == [1.0 / (s + 1) for s in range(2500)]
    assert api.page_points <= 1000

    monkeypatch.setenv("TRICKSCOPE_URL", token_server.url)
    monkeypatch.setenv("TRICKSCOPE_TOKEN", secret)
    from_env = trickscope.Api()
    assert from_env.url == token_server.url
    assert from_env.run(run.id).id == run.id
