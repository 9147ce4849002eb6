"""``trickscope sync``: a run recorded offline reaches the server, once, however often it syncs."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import trickscope
from tests.helpers import LiveServer


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def test_sync_uploads_an_offline_journal_folder_idempotently(
    live_server: LiveServer, tmp_path: Path
) -> None:
    journal_dir = tmp_path / "journal"
    run = trickscope.init(project="offline", url=live_server.url, offline=True,
                          journal_dir=str(journal_dir))  # fmt: skip
    for step in range(30):
        run.log({"loss": 1.0 / (step + 1), "odd": float("nan") if step == 7 else step}, step=step)
    run.finish()
    assert get_json(f"{live_server.url}/api/v1/runs?project=offline")["runs"] == []

    command = [sys.executable, "-m", "trickscope_cli", "sync", str(journal_dir),
               "--url", live_server.url]  # fmt: skip
    for _ in range(2):  # a second sync must not duplicate anything
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr

    (stored,) = get_json(f"{live_server.url}/api/v1/runs?project=offline")["runs"]
    assert stored["id"] == run.id and stored["status"] == "finished"
    base = f"{live_server.url}/api/v1/runs/{run.id}/points?name="
    loss = get_json(base + "loss")
    assert loss["step"] == list(range(30)) and loss["total"] == 30
    assert get_json(base + "odd")["value"][7] == "NaN"


def test_sync_of_a_missing_journal_is_a_one_line_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trickscope_cli", "sync", str(tmp_path / "nope"), "--url",
         "http://127.0.0.1:9"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "no such journal" in result.stderr and "Traceback" not in result.stderr
