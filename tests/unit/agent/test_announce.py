"""The run's default name and the one line with its URL."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

import trickscope
from trickscope.announce import default_name, script_name

SCRIPT = """
import trickscope
run = trickscope.init(project="p", offline=True, journal_dir={journal!r}, url="http://127.0.0.1:9")
print("name=" + run.name)
run.finish()
"""


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["/home/me/train.py", "--lr", "0.1"], "train"),
        (["-c"], "python"),
        ([""], "python"),
        ([], "python"),
        (["/srv/mypkg/__main__.py"], "mypkg"),
        (["/usr/lib/python3/site-packages/ipykernel_launcher.py", "-f", "k.json"], "notebook"),
    ],
)
def test_script_name(argv: list[str], expected: str) -> None:
    assert script_name(argv) == expected


def test_default_name_is_the_script_and_the_short_id() -> None:
    assert default_name("3f2a9c0123", ["train.py"]) == "train-3f2a9c"


def test_a_run_without_a_name_is_named_after_the_script(tmp_path: Path) -> None:
    run = trickscope.init(project="p", offline=True, journal_dir=tmp_path, quiet=True)
    try:
        assert run.name == f"{script_name()}-{run.id[:6]}"
    finally:
        run.finish()


def test_the_url_is_logged_once_at_init(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="trickscope"):
        run = trickscope.init(
            project="p", url="http://127.0.0.1:9", offline=True, journal_dir=tmp_path
        )
        run.log({"x": 1.0}, step=0)
        run.finish()
    lines = [r.getMessage() for r in caplog.records if run.url in r.getMessage()]
    assert len(lines) == 1 and run.name in lines[0]
    assert caplog.records[0].levelno == logging.INFO


@pytest.mark.parametrize("settings", [{"quiet": True}, {"disabled": True}])
def test_quiet_and_disabled_runs_log_no_url(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, settings: dict[str, bool]
) -> None:
    with caplog.at_level(logging.INFO, logger="trickscope"):
        run = trickscope.init(project="p", offline=True, journal_dir=tmp_path, **settings)
        run.finish()
    assert not [r for r in caplog.records if "/runs/" in r.getMessage()]


def test_quiet_reads_its_environment_variable() -> None:
    assert trickscope.AgentConfig.from_env({"TRICKSCOPE_QUIET": "1"}).quiet is True
    with pytest.raises(ValueError, match="TRICKSCOPE_QUIET"):
        trickscope.AgentConfig.from_env({"TRICKSCOPE_QUIET": "maybe"})


def test_a_script_that_never_configured_logging_shows_the_line(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT.format(journal=str(tmp_path / "journal")))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=True
    )
    name = done.stdout.strip().removeprefix("name=")
    assert name.startswith("train-")
    shown = [line for line in done.stderr.splitlines() if "/runs/" in line]
    assert len(shown) == 1 and name in shown[0], done.stderr


def test_a_configured_root_logger_gets_the_line_and_nothing_is_added(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    configured = (
        "import logging\nlogging.basicConfig(level=logging.INFO, format='ROOT %(message)s')\n"
    )
    script.write_text(configured + SCRIPT.format(journal=str(tmp_path / "journal")))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=True
    )
    shown = [line for line in done.stderr.splitlines() if "/runs/" in line]
    assert len(shown) == 1 and shown[0].startswith("ROOT trickscope: run train-"), done.stderr


@pytest.mark.parametrize(("rank", "shown"), [(0, 1), (1, 0)])
def test_only_rank_zero_logs_the_url(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, rank: int, shown: int
) -> None:
    from trickscope.config import AgentConfig
    from trickscope.distributed import Rank
    from trickscope.run import Run

    agent = AgentConfig.from_env({}, offline=True, journal_dir=tmp_path)
    with caplog.at_level(logging.INFO, logger="trickscope"):
        run = Run(
            project="p",
            name=None,
            config=None,
            tags=None,
            agent=agent,
            rank=Rank(rank=rank, world_size=2, backend="gloo"),
            run_id="0123456789abcdef",
        )
        run.finish()
    assert len([r for r in caplog.records if run.url in r.getMessage()]) == shown
