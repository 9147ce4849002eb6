"""Argument parsing and dispatch for ``trickscope <command>``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import metadata
from typing import Any

from trickscope_cli import (
    demo_cmd,
    export_cmd,
    import_cmd,
    report_cmd,
    runs_cmd,
    serve_cmd,
    sync_cmd,
    token_cmd,
)
from trickscope_cli.errors import CliError
from trickscope_cli.help_format import ExamplesFormatter

DESCRIPTION = """\
Trick-aware training diagnostics for PyTorch: a server with live charts and health
checks, fed by a light agent in your training script."""

# The top-level help lists the commands in these groups; a command missing here is listed
# under "other commands", so none is ever left out of the help.
COMMAND_GROUPS = (
    ("run a server", ("serve", "demo")),
    ("work with runs", ("runs", "export", "report", "import")),
    ("train offline", ("sync",)),
    ("control access", ("token",)),
)

EPILOG = """\
examples:
  trickscope serve                           start the server: dashboard at http://127.0.0.1:8000/
  trickscope runs ls --project digits        list a project's runs, newest first
  trickscope export RUN_ID -o run.parquet    download every point of a run
  trickscope import tensorboard runs/        bring TensorBoard logs over as runs

Run 'trickscope COMMAND --help' for a command's options. Docs: README.md and docs/ in the
source; a running server documents its REST API at /docs.
"""


def version() -> str:
    """The installed trickscope's version."""
    try:
        return metadata.version("trickscope")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _command_list(commands: Any) -> str:
    """The commands by group, one line each: their name and their ``help``."""
    helps = {action.dest: action.help or "" for action in commands._choices_actions}
    grouped = {name for _, names in COMMAND_GROUPS for name in names}
    others = tuple(name for name in helps if name not in grouped)
    width = max(map(len, helps)) + 3
    lines: list[str] = []
    for title, names in (*COMMAND_GROUPS, ("other commands", others)):
        present = [name for name in names if name in helps]
        if present:
            lines.append(f"{title}:")
            lines += [f"  {name:<{width}}{helps[name]}" for name in present]
            lines.append("")
    return "\n".join(lines).rstrip()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trickscope",
        usage="trickscope [-h] [--version] COMMAND [ARGS]",
        formatter_class=ExamplesFormatter,
        epilog=EPILOG,
    )
    parser.add_argument(
        "-V",
        "--version",
        action="version",
        version=f"%(prog)s {version()}",
        help="show the version and exit",
    )
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", help=argparse.SUPPRESS, prog="trickscope"
    )
    serve_cmd.add_parser(commands)
    demo_cmd.add_parser(commands)
    sync_cmd.add_parser(commands)
    report_cmd.add_parser(commands)
    import_cmd.add_parser(commands)
    runs_cmd.add_parser(commands)
    export_cmd.add_parser(commands)
    token_cmd.add_parser(commands)
    parser.description = f"{DESCRIPTION}\n\n{_command_list(commands)}"
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``trickscope`` command line; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # a bare `trickscope`: what it can do, as git and docker answer
        parser.print_help()
        return 0
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        return 130
    except CliError as exc:
        print(f"trickscope {args.command}: {exc}", file=sys.stderr)
        return 2
