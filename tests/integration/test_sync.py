"""``trickscope sync``: a run recorded offline reaches the server, once, however often it syncs."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import torch

import trickscope
from tests.helpers import LiveServer, wait_until
from trickscope.journal import read
from trickscope_wire import decode_f64, decode_i64


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def offline_run(journal_dir: Path, url: str) -> trickscope.Run:
    run = trickscope.init(project="offline", url=url, offline=True, journal_dir=str(journal_dir))
    for step in range(30):
        run.log({"loss": 1.0 / (step + 1), "odd": float("nan") if step == 7 else step}, step=step)
    run.finish()
    return run


def sync(*arguments: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "trickscope_cli", "sync", *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_sync_uploads_an_offline_journal_folder_idempotently_and_removes_it(
    live_server: LiveServer, tmp_path: Path
) -> None:
    journal_dir = tmp_path / "journal"
    run = offline_run(journal_dir, live_server.url)
    assert get_json(f"{live_server.url}/api/v1/runs?project=offline")["runs"] == []
    journal = journal_dir / f"{run.id}.jsonl"
    copy = tmp_path / "copy.jsonl"
    shutil.copy(journal, copy)

    result = sync(str(journal_dir), "--url", live_server.url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"synced {journal}" in result.stdout
    assert not journal.exists()  # uploaded whole: the server holds it now
    result = sync(str(copy), "--url", live_server.url)  # a second upload changes nothing
    assert result.returncode == 0, result.stdout + result.stderr

    (stored,) = get_json(f"{live_server.url}/api/v1/runs?project=offline")["runs"]
    assert stored["id"] == run.id and stored["status"] == "finished"
    base = f"{live_server.url}/api/v1/runs/{run.id}/points?name="
    loss = get_json(base + "loss")
    assert loss["step"] == list(range(30)) and loss["total"] == 30
    assert get_json(base + "odd")["value"][7] == "NaN"


def test_sync_uploads_the_rest_of_a_journal_the_server_refuses_part_of(
    live_server: LiveServer, tmp_path: Path
) -> None:
    journal_dir = tmp_path / "journal"
    run = offline_run(journal_dir, live_server.url)
    journal = journal_dir / f"{run.id}.jsonl"
    lines = journal.read_bytes().splitlines(keepends=True)
    # A request the server refuses, between the run's creation and its points.
    refused = {"method": "PUT", "path": f"/api/v1/runs/{run.id}/layers", "body": {"layers": 5}}
    journal.write_bytes(lines[0] + json.dumps(refused).encode() + b"\n" + b"".join(lines[1:]))

    result = sync(str(journal_dir), "--url", live_server.url)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "the server answered 422" in result.stderr and "could not reach" not in result.stderr
    assert "Traceback" not in result.stderr
    dead = journal_dir / f"{run.id}.dead.jsonl"
    assert dead.exists() and not journal.exists()
    stored = get_json(f"{live_server.url}/api/v1/runs/{run.id}")
    assert stored["status"] == "finished"
    assert get_json(f"{live_server.url}/api/v1/runs/{run.id}/points?name=loss")["total"] == 30

    # The folder's dead-letter file is named, not replayed, by a later sync of the folder.
    again = sync(str(journal_dir), "--url", live_server.url)
    assert again.returncode == 0 and "dead-letter" in again.stderr and dead.exists()


def test_sync_to_a_server_that_is_down_keeps_the_journal(tmp_path: Path) -> None:
    journal_dir = tmp_path / "journal"
    run = offline_run(journal_dir, "http://127.0.0.1:9")
    result = sync(str(journal_dir), "--url", "http://127.0.0.1:9")
    assert result.returncode == 2
    assert "could not reach http://127.0.0.1:9" in result.stderr
    assert "Traceback" not in result.stderr
    assert (journal_dir / f"{run.id}.jsonl").exists()


def test_sync_of_a_missing_journal_is_a_one_line_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trickscope_cli", "sync", str(tmp_path / "nope"), "--url",
         "http://127.0.0.1:9"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "no such journal" in result.stderr and "Traceback" not in result.stderr


def test_one_flush_of_logged_scalars_and_statistics_is_one_request_stored_exactly(
    live_server: LiveServer, tmp_path: Path
) -> None:
    """Logged points and watch's statistics flushed together go in one points request; the
    server stores every point of both."""
    journal_dir = tmp_path / "journal"
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    run = trickscope.init(project="together", url=live_server.url, offline=True,
                          journal_dir=str(journal_dir), flush_secs=60.0,
                          stats_flush_secs=60.0)  # fmt: skip
    run.watch(model, optimizer, every=1, hist_every=0)
    journal = journal_dir / f"{run.id}.jsonl"
    # watch's control requests flush what waits when handled: let that be before training
    wait_until(lambda: journal.exists() and b"/setup" in journal.read_bytes(), what="setup")
    for step in range(5):
        loss = model(torch.randn(8, 4)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        run.log({"loss": loss.detach(), "exact": step / 3}, step=step)
    run.finish()
    posts = [r for r in read(journal) if r.path.endswith("/points")]
    assert len(posts) == 1
    body = json.loads(posts[0].body)
    assert body["blocks"] and body["series"]  # statistics and logged scalars, both in it

    result = sync(str(journal), "--url", live_server.url)
    assert result.returncode == 0, result.stdout + result.stderr
    base = f"{live_server.url}/api/v1/runs/{run.id}"
    exact = get_json(f"{base}/points?name=exact")
    assert exact["step"] == list(range(5)) and exact["value"] == [s / 3 for s in range(5)]
    block = body["blocks"][0]
    name = f"{block['family']}/{block['layers'][0]}"
    stat = get_json(f"{base}/points?" + urllib.parse.urlencode({"name": name}))
    assert stat["step"] == decode_i64(block["steps"]).tolist()
    steps = len(stat["step"])
    assert stat["value"] == decode_f64(block["values"]).tolist()[:steps]  # the first layer's


KILLED_SCRIPT = """
import sys, time
import torch
from torch import nn
import trickscope

run = trickscope.init(project="held", url=sys.argv[1], journal_dir=sys.argv[2], flush_secs=0.1)
print(run.id, flush=True)
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
run.watch(model, optimizer, every=1, hist_every=20)
step = 0
while True:
    optimizer.zero_grad(set_to_none=True)
    loss = model(torch.randn(16, 4)).pow(2).mean()
    loss.backward()
    optimizer.step()
    run.log({"loss": loss.detach()}, step=step)
    print(step, flush=True)
    step += 1
    time.sleep(0.02)
"""


def _train_then_kill(url: str, tmp_path: Path) -> tuple[str, int, Path]:
    """Run :data:`KILLED_SCRIPT` until step 80, SIGKILL it: its run id, the last step it
    logged, and its journal folder."""
    script = tmp_path / "train.py"
    script.write_text(KILLED_SCRIPT)
    journal_dir = tmp_path / "journal"
    process = subprocess.Popen(
        [sys.executable, str(script), url, str(journal_dir)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        run_id = process.stdout.readline().strip()
        last = 0
        while last < 80:
            last = int(process.stdout.readline())
        process.kill()
        last = max([last, *map(int, process.stdout.read().split())])  # the last step logged
    finally:
        process.kill()
        process.wait()
    return run_id, last, journal_dir


def _assert_every_step_up_to_the_kill(url: str, run_id: str, last: int) -> None:
    base = f"{url}/api/v1/runs/{run_id}/points?points=100000&name="
    # ~0.1 s of steps (~4) may not have been copied yet when the process died.
    for name in ("loss", "grad_norm/0.weight", "weight_norm/2.bias"):
        steps = get_json(base + urllib.parse.quote(name, safe=""))["step"]
        assert steps == list(range(len(steps))), name
        assert len(steps) >= last - 10, (name, len(steps), last)
    histograms = f"{url}/api/v1/runs/{run_id}/histograms?name=grad_hist%2F0.weight"
    due = list(range(0, last + 1, 20))
    assert get_json(histograms)["step"] in (due, due[:-1])


def test_sync_sends_what_a_training_process_killed_while_unfollowed_held(
    live_server: LiveServer, tmp_path: Path
) -> None:
    """Nobody follows the run, so the agent holds its points (12 s at ``flush_secs=0.1``),
    copying them to disk every 0.1 s. A SIGKILL leaves the copies; sync sends them: the run has
    every step up to a fraction of a second before the kill: logged points, statistics and
    histograms."""
    run_id, last, journal_dir = _train_then_kill(live_server.url, tmp_path)
    base = f"{live_server.url}/api/v1/runs/{run_id}/points?points=100000&name="
    held_on_disk = sorted(journal_dir.glob(f"{run_id}.held.*"))
    assert held_on_disk
    before = get_json(base + "loss")["total"]
    assert before < 40  # held, not sent: the first flush's few steps at most

    result = sync(str(journal_dir), "--url", live_server.url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not list(journal_dir.glob("*.held.*"))
    _assert_every_step_up_to_the_kill(live_server.url, run_id, last)


def test_the_next_run_sends_what_a_killed_process_held_and_names_what_it_cannot(
    live_server: LiveServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No sync: the next run started with the same journal folder sends the killed run's hold
    files itself, in a thread of its own, and deletes them. A dead process's file of a run
    this server never had, and a journal of requests no server took, stay on disk, named in
    one warning with the command that sends them."""
    run_id, last, journal_dir = _train_then_kill(live_server.url, tmp_path)
    (held, *_) = sorted(journal_dir.glob(f"{run_id}.held.*"))
    pid = held.name.split(".")[-2]
    foreign = journal_dir / f"{'f' * 32}.held.{pid}.1"  # another server's run
    shutil.copy(held, foreign)
    offline = journal_dir / f"{'e' * 32}.jsonl"
    offline.write_text("")
    caplog.set_level(logging.INFO, logger="trickscope")

    run = trickscope.init(project="next", url=live_server.url, journal_dir=str(journal_dir))
    try:
        wait_until(lambda: not list(journal_dir.glob(f"{run_id}.held.*")), timeout=60, what="sent")
        _assert_every_step_up_to_the_kill(live_server.url, run_id, last)
        wait_until(lambda: "trickscope sync" in caplog.text, timeout=10, what="the warning")
    finally:
        run.finish()
    assert foreign.exists() and offline.exists()
    (warning,) = [r.getMessage() for r in caplog.records if "trickscope sync" in r.getMessage()]
    assert "2 file(s)" in warning and foreign.name in warning and offline.name in warning
    assert f"sent the points of run {run_id}" in caplog.text
