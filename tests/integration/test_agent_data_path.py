"""The agent's data path against a real server and a real SQLite file: every logged point is
stored, the run comes before its data, refused requests are set aside and replayable, the token
is sent, idle runs send heartbeats, and a SIGTERM'd script does not leave its run running."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import torch
from torch import nn

import trickscope
from tests.helpers import LiveServer, start_server, stop_server, wait_until
from trickscope import journal
from trickscope.journal import Request
from trickscope.transport import Connection
from trickscope_wire import encode_f64, encode_i64

MILLION = 1_000_000
TOKEN = "data-path-test-token-0123456789"


def get_json(url: str, token: str | None = None) -> dict:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


@pytest.fixture
def wide_server(tmp_path: Path) -> Iterator[LiveServer]:
    """A real server whose reads return up to two million points undownsampled."""
    server = start_server(
        f"sqlite:///{tmp_path / 'ts.db'}",
        tmp_path / "server.log",
        env={"TRICKSCOPE_MAX_POINTS": str(2 * MILLION)},
    )
    yield server
    stop_server(server)


def stored(server: LiveServer, run_id: str, name: str) -> tuple[list[int], list[float]]:
    query = urllib.parse.urlencode({"name": name, "points": 2 * MILLION})
    body = get_json(f"{server.url}/api/v1/runs/{run_id}/points?{query}")
    return body["step"], body["value"]


def test_a_million_points_from_a_tight_loop_are_all_stored_in_order_with_a_spike(
    wide_server: LiveServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spike_at = 654_321
    with caplog.at_level(logging.WARNING, logger="trickscope"):
        run = trickscope.init(project="tight", url=wide_server.url, journal_dir=str(tmp_path))
        for s in range(MILLION):
            run.log({"x": 1e9 if s == spike_at else float(s % 7)}, step=s)
        run.finish()
    steps, values = stored(wide_server, run.id, "x")
    assert steps == list(range(MILLION))
    assert values == [1e9 if s == spike_at else float(s % 7) for s in range(MILLION)]
    assert run.incidents.errors == 0 and run.incidents.thinned == 0
    assert run.sender is not None and run.sender.dead_lettered == 0
    assert run.sender.journal_path is None and caplog.records == []
    assert get_json(f"{wide_server.url}/api/v1/runs/{run.id}")["status"] == "finished"


def test_past_the_memory_bound_logged_points_spill_to_disk_and_still_all_arrive(
    wide_server: LiveServer, tmp_path: Path
) -> None:
    run = trickscope.init(project="spill", url=wide_server.url, journal_dir=str(tmp_path),
                          log_buffer_bytes=64 * 1024)  # fmt: skip
    for s in range(200_000):
        run.log({"a": float(s), "b": -float(s)}, step=s)
    assert run.sender is not None
    spilled = run.sender.scalars.spilled_points
    run.finish()
    assert spilled > 0
    for name, sign in (("a", 1.0), ("b", -1.0)):
        steps, values = stored(wide_server, run.id, name)
        assert steps == list(range(200_000)) and values == [sign * s for s in steps]
    assert not list(tmp_path.glob("*.overflow.*"))  # read back and removed


def exported(server: LiveServer, run_id: str) -> dict[str, list[tuple[int, float]]]:
    """Every point of the run, per series, from its CSV export."""
    with urllib.request.urlopen(f"{server.url}/api/v1/runs/{run_id}/export.csv") as response:
        rows = list(csv.reader(io.TextIOWrapper(response, encoding="utf-8", newline="")))
    points: dict[str, list[tuple[int, float]]] = {}
    for name, step, value, _ in rows[1:]:
        points.setdefault(name, []).append((int(step), float(value)))
    return points


def test_wide_dicts_from_a_tight_loop_are_all_stored_exactly_within_the_memory_bound(
    wide_server: LiveServer, tmp_path: Path
) -> None:
    """Dicts of 200 floats (NaN and ±Inf among them) and of 16 tensors, logged step after step
    with a buffer of a few thousand points; the key set changes half way and one name moves
    from the dict to a call of its own. Every point is stored once, with its exact value, and
    the agent held no more than its bound."""
    bound = 48 * 1024  # 2,048 points: the run logs ~60,000
    run = trickscope.init(project="wide", url=wide_server.url, journal_dir=str(tmp_path),
                          log_buffer_bytes=bound)  # fmt: skip
    special = (math.nan, math.inf, -math.inf)
    keys = [f"m/{k}" for k in range(200)]
    for s in range(300):
        metrics = {
            key: special[k % 3] if (s + k) % 97 == 0 else s + k / 7 for k, key in enumerate(keys)
        }
        if s >= 150:  # "m/0" leaves the dict and is logged on its own
            run.log({"m/0": metrics.pop("m/0")}, step=s)
        run.log(metrics, step=s)
        if s % 10 == 0:
            loss = torch.tensor(float(s), requires_grad=True) * 2
            run.log({f"t/{k}": loss * (k + 1) for k in range(16)}, step=s)
    assert run.sender is not None
    scalars = run.sender.scalars
    run.finish()
    got = exported(wide_server, run.id)
    for k, key in enumerate(keys):
        expected = [(s, special[k % 3] if (s + k) % 97 == 0 else s + k / 7) for s in range(300)]
        assert [step for step, _ in got[key]] == list(range(300)), key
        assert [repr(v) for _, v in got[key]] == [repr(v) for _, v in expected], key
    for k in range(16):
        assert got[f"t/{k}"] == [(s, 2.0 * s * (k + 1)) for s in range(0, 300, 10)]
    assert len(got) == 216 and run.incidents.errors == 0
    assert scalars.spilled_points > 0 and scalars.peak_points < bound // 24 + 200
    assert not list(tmp_path.glob("*.overflow.*")) and run.sender.journal_path is None


def test_the_run_exists_before_its_first_points_batch(
    live_server: LiveServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Layer statistics thinned before the sender thread first ran: their count used to be
    flushed ahead of the run's creation, and the batch met a 404 with a traceback."""
    model = nn.Linear(8, 8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with caplog.at_level(logging.WARNING, logger="trickscope"):
        run = trickscope.init(project="order", url=live_server.url, journal_dir=str(tmp_path),
                              queue_size=1)  # fmt: skip
        run.watch(model, optimizer, every=1)
        for step in range(100):
            optimizer.zero_grad()
            model(torch.randn(4, 8)).sum().backward()
            optimizer.step()
            run.log({"loss": float(step)}, step=step)
        for step in range(100, 100_000):
            run.log({"loss": float(step)}, step=step)
        run.finish()
    assert run.sender is not None and run.sender.dead_lettered == 0
    assert run.incidents.errors == 0
    assert not [r for r in caplog.records if "404" in r.getMessage() or r.exc_info]
    body = get_json(f"{live_server.url}/api/v1/runs/{run.id}/points?name=loss&points=3")
    assert body["total"] == 100_000


def _nul_batch() -> bytes:
    """A points batch the server refuses (a NUL in its series name), built by hand: the agent
    repairs such names itself."""
    columns = {"steps": encode_i64([0]), "values": encode_f64([1.0]), "times": encode_f64([0.0])}
    series = [{"name": "loss\x00poison", **columns}]
    return json.dumps({"batch_id": "nul-batch", "series": series, "wire_version": 1}).encode()


def test_a_refused_batch_is_set_aside_the_run_goes_on_and_sync_reports_the_answer(
    live_server: LiveServer, tmp_path: Path
) -> None:
    run = trickscope.init(project="poison", url=live_server.url, journal_dir=str(tmp_path),
                          flush_secs=0.05)  # fmt: skip
    for step in range(200):
        run.log({"loss": float(step)}, step=step)
        if step == 50:
            assert run.sender is not None
            run.sender.request(Request("POST", f"/api/v1/runs/{run.id}/points", _nul_batch()))
    run.finish()
    stored_run = get_json(f"{live_server.url}/api/v1/runs/{run.id}")
    assert stored_run["status"] == "finished"
    points = get_json(f"{live_server.url}/api/v1/runs/{run.id}/points?name=loss")
    assert points["step"] == list(range(200))
    assert run.sender is not None and run.sender.dead_lettered == 1
    dead = run.sender.dead_letter_path
    assert dead is not None and dead.name == f"{run.id}.dead.jsonl"
    (set_aside,) = journal.read(dead)
    assert b"poison" in set_aside.body

    result = subprocess.run(
        [sys.executable, "-m", "trickscope_cli", "sync", str(dead), "--url", live_server.url],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "the server answered 422" in result.stderr and "could not reach" not in result.stderr
    assert "Traceback" not in result.stderr
    assert dead.exists() and len(list(journal.read(dead))) == 1  # kept for a later retry


def test_requests_refused_for_a_missing_token_are_set_aside_then_synced_with_it(
    tmp_path: Path,
) -> None:
    server = start_server(f"sqlite:///{tmp_path / 'ts.db'}", tmp_path / "server.log",
                          env={"TRICKSCOPE_TOKEN": TOKEN})  # fmt: skip
    try:
        journal_dir = tmp_path / "journal"
        with trickscope.init(project="auth", url=server.url, journal_dir=str(journal_dir)) as run:
            for step in range(20):
                run.log({"loss": float(step)}, step=step)
        assert run.sender is not None and run.sender.dead_lettered >= 3  # run, points, finish
        dead = run.sender.dead_letter_path
        assert dead is not None and [r.method for r in journal.read(dead)][0] == "PUT"
        with pytest.raises(urllib.error.HTTPError) as refused:
            get_json(f"{server.url}/api/v1/runs/{run.id}")
        assert refused.value.code == 401

        command = [sys.executable, "-m", "trickscope_cli", "sync", str(dead), "--url",
                   server.url, "--token", TOKEN]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        assert not dead.exists()
        stored_run = get_json(f"{server.url}/api/v1/runs/{run.id}", TOKEN)
        assert stored_run["status"] == "finished"
        base = f"{server.url}/api/v1/runs/{run.id}/points?name=loss"
        assert get_json(base, TOKEN)["step"] == list(range(20))

        with trickscope.init(project="auth", url=server.url, token=TOKEN,
                             journal_dir=str(journal_dir)) as second:  # fmt: skip
            second.log({"loss": 1.0}, step=0)
        assert second.sender is not None and second.sender.dead_lettered == 0
        assert get_json(f"{server.url}/api/v1/runs/{second.id}", TOKEN)["status"] == "finished"
    finally:
        stop_server(server)


def test_an_idle_run_stays_alive_on_its_long_wait_for_a_follower_alone(tmp_path: Path) -> None:
    """Nobody follows the run and it sends nothing: its one long wait for a follower keeps it
    alive, the server stamping it seen while it holds the wait, through many graces. No
    heartbeat goes, no second wait, and nothing is journaled."""
    server = start_server(f"sqlite:///{tmp_path / 'ts.db'}", tmp_path / "server.log",
                          env={"TRICKSCOPE_LIVENESS_GRACE_SECONDS": "1.5"})  # fmt: skip
    sent: list[str] = []
    send = Connection.send

    def counted(self: Connection, method: str, path: str, body: bytes, **kw: Any) -> int:
        sent.append(path.split("/")[-1])
        return send(self, method, path, body, **kw)

    try:
        with mock.patch.object(Connection, "send", counted):
            run = trickscope.init(project="beat", url=server.url, journal_dir=str(tmp_path))
            run.log({"loss": 1.0}, step=0)
            sender = run.sender
            assert sender is not None
            seen: set[str] = set()

            def seen_again() -> bool:
                try:
                    answer = get_json(f"{server.url}/api/v1/runs/{run.id}")
                except urllib.error.HTTPError:  # not created yet
                    return False
                assert answer["status"] == "running", answer  # never unseen past the grace
                seen.add(answer["last_seen_at"])
                return len(seen) >= 6

            wait_until(seen_again, timeout=30, interval=0.1, what="the run seen again and again")
            watch = sender.follow_watch
            assert watch is not None and watch.vouches  # the wait held stands for heartbeats
            waits = [path for path in sent if path.startswith("followed")]
            assert waits == ["followed?wait=600"], sent
            assert "heartbeat" not in sent
            run.finish()
    finally:
        stop_server(server)
    assert run.incidents.errors == 0 and sender.dead_lettered == 0
    assert not list(tmp_path.glob("*.jsonl"))  # neither the wait nor anything else is journaled


SCRIPT = textwrap.dedent(
    """
    import sys, time
    import trickscope

    run = trickscope.init(project="term", url=sys.argv[1], journal_dir=sys.argv[2])
    print(run.id, flush=True)
    step = 0
    while True:
        run.log({"x": float(step)}, step=step)
        step += 1
        if step % 1000 == 0:
            time.sleep(0.001)
    """
)


def test_a_script_killed_with_sigterm_marks_its_run_crashed(
    live_server: LiveServer, tmp_path: Path
) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    process = subprocess.Popen(
        [sys.executable, str(script), live_server.url, str(tmp_path / "journal")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        run_id = process.stdout.readline().strip()
        base = f"{live_server.url}/api/v1/runs/{run_id}"
        wait_until(lambda: _has_points(base), timeout=30, what="the first points")
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == -signal.SIGTERM  # the signal still ends the process
    assert time.monotonic() - started < 10
    assert "Traceback" not in stderr
    stored_run = get_json(base)
    assert stored_run["status"] == "crashed" and stored_run["ended_at"] is not None
    points = get_json(f"{base}/points?name=x&points=3")
    assert points["total"] > 0


def _has_points(base: str) -> bool:
    try:
        return get_json(f"{base}/points?name=x&points=3")["total"] > 0
    except urllib.error.HTTPError:
        return False


def test_hostile_input_is_repaired_so_the_server_stores_the_run(
    live_server: LiveServer, tmp_path: Path
) -> None:
    deep: dict = {}
    node = deep
    for _ in range(300):
        node["d"] = {}
        node = node["d"]
    config = {"deep": deep, "nan": math.nan, "k\x00": "v\ud800", "inf": math.inf}
    tags = ["ok", "\ud800", "t\x00"] + [f"t{i}" for i in range(400)]
    with trickscope.init(project="hostile\x00", name="n\udc00", config=config, tags=tags,
                         url=live_server.url, journal_dir=str(tmp_path)) as run:  # fmt: skip
        run.log({"loss\x00": 1.0, "m" * 700: 2.0, "ok": math.nan}, step=0)
        run.update_config({"later\x00": math.inf})
    assert run.sender is not None and run.sender.dead_lettered == 0
    stored_run = get_json(f"{live_server.url}/api/v1/runs/{run.id}")
    assert stored_run["project"] == "hostile\ufffd" and stored_run["status"] == "finished"
    assert (
        stored_run["config"]["nan"] == "NaN" and stored_run["config"]["later\ufffd"] == "Infinity"
    )
    assert len(stored_run["tags"]) == 256
    names = {
        s["name"] for s in get_json(f"{live_server.url}/api/v1/runs/{run.id}/series")["series"]
    }
    assert {"loss\ufffd", "m" * 512, "ok"} <= names
    assert get_json(f"{live_server.url}/api/v1/runs?project=hostile%EF%BF%BD")["runs"]
