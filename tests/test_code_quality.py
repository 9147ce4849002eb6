"""Standing checks run with the suite: ruff, import boundaries, the README's two commands."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run_tool(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    executable = shutil.which(name, path=str(BIN)) or shutil.which(name)
    assert executable, f"{name} is not installed: pip install -e '.[dev]'"
    return subprocess.run(
        [executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_ruff_finds_nothing() -> None:
    result = run_tool("ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_import_boundaries_hold() -> None:
    result = run_tool("lint-imports")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ci_runs_exactly_the_readme_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:sh|bash)\n(.*?)```", readme, re.S)
    commands = [line for block in blocks for line in block.splitlines()]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    setup, test = ci[-2], ci[-1]
    assert setup in commands and test in commands
