"""Argument parsing and dispatch for ``trickscope <command>``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trickscope",
        description="Trick-aware training diagnostics for PyTorch: a server with live charts, "
        "a light agent for training scripts, and a demo.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve_cmd.add_parser(commands)
    demo_cmd.add_parser(commands)
    sync_cmd.add_parser(commands)
    report_cmd.add_parser(commands)
    import_cmd.add_parser(commands)
    runs_cmd.add_parser(commands)
    export_cmd.add_parser(commands)
    token_cmd.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``trickscope`` command line; returns the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        return 130
    except CliError as exc:
        print(f"trickscope {args.command}: {exc}", file=sys.stderr)
        return 2
