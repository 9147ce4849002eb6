"""``trickscope runs ls`` and ``trickscope export`` end to end against a real server."""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import LiveServer, free_port, start_server, stop_server
from tests.packaging.test_without_torch import torchless_env
from trickscope_cli.main import main
from trickscope_wire import PointBatch, SeriesColumns, dumps, encode_f64, encode_i64

pytestmark = pytest.mark.timeout(120)

TOKEN = "env-" + "k" * 40
# name -> (config, tags, losses by step, final status)
RUNS = {
    "alpha": ({"lr": 0.1, "optimizer": "sgd", "depth": 4}, ["base"], [2.0, 1.0, 0.5], "finished"),
    "beta": ({"lr": 0.01, "optimizer": "adamw", "depth": 4}, ["x"], [2.0, 1.5], "failed"),
    "gamma": ({"lr": 0.001, "optimizer": "sgd", "depth": 4}, ["base"], [3.0, float("nan")], None),
}


def request(server: LiveServer, method: str, path: str, body: bytes, token: str | None) -> None:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(
        f"{server.url}/api/v1{path}", data=body, method=method, headers=headers
    )
    with urllib.request.urlopen(req, timeout=10) as response:
        assert response.status < 300


def populate(server: LiveServer, token: str | None = None) -> dict[str, str]:
    """The runs of RUNS sent as the agent sends them (wire format); name -> run id."""
    ids = {}
    for name, (config, tags, losses, status) in RUNS.items():
        run_id = uuid.uuid4().hex
        meta = {"project": "cli", "name": name, "config": config, "tags": tags}
        request(server, "PUT", f"/runs/{run_id}", json.dumps(meta).encode(), token)
        steps = list(range(len(losses)))
        column = SeriesColumns(
            "loss/train",
            encode_i64(steps),
            encode_f64(losses),
            encode_f64([time.time()] * len(steps)),
        )
        batch = dumps(PointBatch(batch_id=uuid.uuid4().hex, series=[column], histograms=[]))
        request(server, "POST", f"/runs/{run_id}/points", batch, token)
        if status:
            request(
                server,
                "POST",
                f"/runs/{run_id}/finish",
                json.dumps({"status": status}).encode(),
                token,
            )
        ids[name] = run_id
        time.sleep(0.01)  # distinct creation times: the default order is well defined
    return ids


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, dict[str, str]]]:
    tmp = tmp_path_factory.mktemp("cli")
    live = start_server(f"sqlite:///{tmp / 'trickscope.db'}", tmp / "server.log")
    ids = populate(live)
    yield live, ids
    stop_server(live)


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def table(out: str) -> list[list[str]]:
    return [line.split() for line in out.strip().splitlines()]


def test_runs_ls_prints_an_aligned_table(server, capsys) -> None:
    live, ids = server
    code, out, err = cli(capsys, "runs", "ls", "--url", live.url)
    assert code == 0, err
    lines = out.strip().splitlines()
    header = lines[0].split()
    # Columns: the run's fields, the config keys that differ (lr, optimizer; not depth), loss.
    assert header == [
        "ID",
        "NAME",
        "STATUS",
        "STARTED",
        "DURATION",
        "STEP",
        "lr",
        "optimizer",
        "loss/train",
    ]
    rows = table(out)[1:]
    assert [row[1] for row in rows] == ["gamma", "beta", "alpha"]  # newest first
    assert [row[0] for row in rows] == [ids["gamma"], ids["beta"], ids["alpha"]]
    assert rows[0][2] == "running" and rows[1][2] == "failed" and rows[2][2] == "finished"
    assert rows[2][-4:] == ["2", "0.1", "sgd", "0.5"]  # step, lr, optimizer, last loss
    assert rows[0][-1] == "nan"  # the last loss logged was NaN
    # Aligned: every column starts at its header's offset on every line, two spaces after the
    # previous one.
    offsets = [match.start() for match in re.finditer(r"\S+", lines[0])]
    for line in lines[1:]:
        assert all(line[at] != " " and line[at - 2 : at] == "  " for at in offsets[1:]), line


def test_runs_ls_filters_sort_and_columns(server, capsys) -> None:
    live, ids = server
    code, out, err = cli(
        capsys, "runs", "ls", "--url", live.url, "--config", "optimizer:sgd", "--sort=-config:lr"
    )
    assert code == 0, err
    assert [row[1] for row in table(out)[1:]] == ["alpha", "gamma"]
    code, out, _ = cli(capsys, "runs", "ls", "--url", live.url, "--metric", "loss/train<1.2")
    assert [row[1] for row in table(out)[1:]] == ["alpha"]
    code, out, _ = cli(
        capsys, "runs", "ls", "--url", live.url, "--tag", "base", "--status", "finished"
    )
    assert [row[1] for row in table(out)[1:]] == ["alpha"]
    code, out, err = cli(
        capsys,
        "runs",
        "ls",
        "--url",
        live.url,
        "--sort",
        "name",
        "--limit",
        "2",
        "--columns",
        "config.depth,metric.loss/train",
    )
    rows = table(out)
    assert err.strip() == "trickscope: the first 2 runs; --limit 0 lists them all"
    assert rows[0][-2:] == ["depth", "loss/train"]
    assert [(r[1], r[-2], r[-1]) for r in rows[1:]] == [("alpha", "4", "0.5"), ("beta", "4", "1.5")]
    code, out, _ = cli(capsys, "runs", "ls", "--url", live.url, "--project", "none")
    assert code == 0 and out.strip() == "trickscope: no runs match"


def test_runs_ls_json_is_the_rest_listing(server, capsys) -> None:
    live, _ = server
    code, out, err = cli(capsys, "runs", "ls", "--url", live.url, "--json", "--sort", "name")
    assert code == 0, err
    query = urllib.parse.urlencode({"sort": "name"})
    with urllib.request.urlopen(f"{live.url}/api/v1/runs?{query}", timeout=10) as response:
        rest = json.loads(response.read())["runs"]
    listed = json.loads(out)
    strip = lambda runs: [{k: v for k, v in r.items() if k != "last_seen_at"} for r in runs]  # noqa: E731
    assert strip(listed) == strip(rest)


def test_runs_ls_errors_are_one_line(server, capsys) -> None:
    live, _ = server
    code, out, err = cli(capsys, "runs", "ls", "--url", live.url, "--sort", "bogus")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "422" in err and "sort 'bogus'" in err
    code, _, err = cli(capsys, "runs", "ls", "--url", live.url, "--config", "no-colon")
    assert code == 2 and "must be <dotted.key>:<value>" in err
    code, _, err = cli(capsys, "runs", "ls", "--url", f"http://127.0.0.1:{free_port()}")
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("trickscope runs: could not reach http://127.0.0.1:")
    code, _, err = cli(capsys, "runs", "ls", "--url", live.url, "--columns", "lr")
    assert code == 2 and "config.<key> or metric.<name>" in err


def rest_bytes(live: LiveServer, path: str) -> bytes:
    with urllib.request.urlopen(f"{live.url}/api/v1{path}", timeout=10) as response:
        return response.read()


def test_export_writes_the_servers_export(server, capsys, tmp_path, monkeypatch) -> None:
    live, ids = server
    out_file = tmp_path / "alpha.csv"  # the suffix picks the format
    code, out, err = cli(capsys, "export", ids["alpha"], "--url", live.url, "-o", str(out_file))
    assert code == 0, err
    assert out.strip().startswith(f"trickscope: wrote {out_file}") and "csv" in out
    assert out_file.read_bytes() == rest_bytes(live, f"/runs/{ids['alpha']}/export.csv")

    monkeypatch.chdir(tmp_path)  # default name: RUN_ID.parquet in the current folder
    code, _, err = cli(capsys, "export", ids["gamma"], "--url", live.url)
    assert code == 0, err
    frame = pd.read_parquet(tmp_path / f"{ids['gamma']}.parquet")
    assert frame["step"].tolist() == [0, 1] and frame["value"].isna().tolist() == [False, True]
    assert not list(tmp_path.glob("*.part"))


def test_export_errors_are_one_line(server, capsys, tmp_path) -> None:
    live, ids = server
    code, _, err = cli(capsys, "export", "nope", "--url", live.url, "-o", str(tmp_path / "x.csv"))
    assert code == 2 and err.count("\n") == 1 and "has no run 'nope'" in err
    assert not (tmp_path / "x.csv").exists()
    code, _, err = cli(
        capsys, "export", ids["alpha"], "--url", live.url, "-o", str(tmp_path / "no" / "x")
    )
    assert code == 2 and "does not exist" in err
    code, _, err = cli(capsys, "export", ids["alpha"], "--url", f"http://127.0.0.1:{free_port()}")
    assert code == 2 and "could not reach" in err


def test_export_draws_a_byte_progress_bar_on_a_terminal(server, tmp_path) -> None:
    """On a terminal the download shows its bytes; through a pipe (above) it stays quiet."""
    live, ids = server
    primary, replica = pty.openpty()  # stderr is a terminal, stdout a pipe
    # A terminal 100 columns wide (a new pseudo-terminal has none, and the bar fits its width).
    fcntl.ioctl(replica, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "trickscope_cli",
                "export",
                ids["alpha"],
                "--url",
                live.url,
                "-o",
                str(tmp_path / "a.csv"),
            ],
            stdout=subprocess.PIPE,
            stderr=replica,
            timeout=60,
            text=True,
        )
        os.close(replica)
        replica = -1
        drawn = b""
        while select.select([primary], [], [], 0.5)[0]:
            try:
                piece = os.read(primary, 65536)
            except OSError:  # the terminal closed once everything was read
                break
            if not piece:
                break
            drawn += piece
    finally:
        if replica != -1:
            os.close(replica)
        os.close(primary)
    assert done.returncode == 0
    assert (tmp_path / "a.csv").stat().st_size > 0
    text = drawn.decode()
    assert f"export {ids['alpha'][:12]}: " in text and "B/s]" in text  # a bar counting bytes


@pytest.fixture
def token_server(tmp_path: Path) -> Iterator[LiveServer]:
    env = {"TRICKSCOPE_TOKEN": TOKEN}
    live = start_server(f"sqlite:///{tmp_path / 'auth.db'}", tmp_path / "auth.log", env=env)
    yield live
    stop_server(live)


def test_a_token_server_is_read_with_the_token(token_server, capsys, monkeypatch) -> None:
    ids = populate(token_server, TOKEN)
    monkeypatch.delenv("TRICKSCOPE_TOKEN", raising=False)
    code, _, err = cli(capsys, "runs", "ls", "--url", token_server.url)
    assert code == 2 and "401" in err and "--token" in err
    code, out, err = cli(capsys, "runs", "ls", "--url", token_server.url, "--token", TOKEN)
    assert code == 0, err
    assert {row[0] for row in table(out)[1:]} == set(ids.values())
    monkeypatch.setenv("TRICKSCOPE_TOKEN", TOKEN)
    monkeypatch.setenv("TRICKSCOPE_URL", token_server.url)
    code, out, err = cli(capsys, "runs", "ls", "--json")
    assert code == 0 and len(json.loads(out)) == 3


def test_runs_ls_and_export_work_without_torch(server, tmp_path) -> None:
    live, ids = server
    env = {**os.environ, **torchless_env(tmp_path)}
    listing = subprocess.run(
        [sys.executable, "-m", "trickscope_cli", "runs", "ls", "--url", live.url],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listing.returncode == 0, listing.stderr
    assert ids["alpha"] in listing.stdout
    target = tmp_path / "alpha.parquet"
    export = subprocess.run(
        [
            sys.executable,
            "-m",
            "trickscope_cli",
            "export",
            ids["alpha"],
            "--url",
            live.url,
            "-o",
            str(target),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert export.returncode == 0, export.stderr
    assert pd.read_parquet(io.BytesIO(target.read_bytes()))["value"].tolist() == [2.0, 1.0, 0.5]
    client = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, trickscope; api = trickscope.Api(sys.argv[1]); "
            "print(api.runs(sort='name')[0].history('loss/train')['loss/train'].tolist()); "
            "assert 'torch' not in sys.modules",
            live.url,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert client.returncode == 0, client.stderr
    assert client.stdout.strip() == "[2.0, 1.0, 0.5]"
