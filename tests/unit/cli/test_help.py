"""``trickscope --help`` and every command's help read alike: grouped, one line per command,
every option explained, a version."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata

import pytest

from trickscope_cli.main import COMMAND_GROUPS, build_parser, main


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], str, argparse.ArgumentParser]]:
    """Every command and subcommand: its path, its one-line help and its parser."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield (*path, name), helps.get(name) or "", sub
                yield from commands(sub, (*path, name))


ALL = list(commands(build_parser()))


def test_every_command_is_in_the_top_level_help_under_a_group() -> None:
    top = build_parser().format_help()
    names = [path[0] for path, _, _ in ALL if len(path) == 1]
    assert {"serve", "demo", "sync", "report", "import", "token"} <= set(names)
    grouped = [name for _, group in COMMAND_GROUPS for name in group]
    for path, line, _ in ALL:
        if len(path) == 1:
            assert re.search(rf"\n  {path[0]} +{re.escape(line)}\n", top), path[0]
            assert path[0] in grouped, f"{path[0]} is listed under 'other commands'"
    assert "examples:" in top and "trickscope COMMAND --help" in top


@pytest.mark.parametrize("path", [path for path, _, _ in ALL], ids=" ".join)
def test_every_command_has_a_one_line_help_and_explains_every_option(path: tuple[str, ...]) -> None:
    line, parser = next((line, parser) for p, line, parser in ALL if p == path)
    assert line and "\n" not in line and line[0].islower() and not line.endswith(".")
    assert parser.format_help().startswith(f"usage: trickscope {' '.join(path)}")
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        name = "/".join(action.option_strings) or action.dest
        text = action.help or ""
        assert text, f"trickscope {' '.join(path)} {name} has no help"
        assert not text.rstrip().endswith("."), f"{name}: help ends with a period"
        first = text.split()[0]
        # Lowercase like its peers; a name (HTML, AdamW, SQLAlchemy) keeps its capitals.
        assert not (first[0].isupper() and first[1:].islower()), f"{name}: {text!r}"


def test_version_prints_the_installed_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trickscope_cli", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    assert result.stdout == f"trickscope {metadata.version('trickscope')}\n"


def test_a_bare_trickscope_prints_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    assert capsys.readouterr().out == build_parser().format_help()


def test_help_fits_a_100_column_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")  # argparse wraps to the terminal's width
    for path, _, parser in [((), "", build_parser()), *ALL]:
        for line in parser.format_help().splitlines():
            assert len(line) <= 100, f"trickscope {' '.join(path)}: {line!r}"
