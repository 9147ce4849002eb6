"""``trickscope serve`` and the server work where torch cannot be imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.helpers import start_server, stop_server


def torchless_env(tmp_path: Path) -> dict[str, str]:
    """An environment in which ``import torch`` fails, as on a server without torch."""
    blocker = tmp_path / "blocker" / "torch"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('torch is not installed here')\n")
    path = os.pathsep.join(filter(None, [str(blocker.parent), os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": path}


def test_torch_is_really_blocked(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import torch"],
        env={**os.environ, **torchless_env(tmp_path)},
        capture_output=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert b"torch is not installed here" in result.stderr


def test_serve_starts_and_answers_without_torch(tmp_path: Path) -> None:
    server = start_server(
        f"sqlite:///{tmp_path / 'ts.db'}", tmp_path / "serve.log", env=torchless_env(tmp_path)
    )
    try:
        with urllib.request.urlopen(f"{server.url}/api/v1/runs", timeout=10) as response:
            assert json.loads(response.read())["runs"] == []
        with urllib.request.urlopen(f"{server.url}/", timeout=10) as response:
            assert b"trickscope" in response.read()
    finally:
        stop_server(server)
    assert "ImportError" not in server.log()
