"""``trickscope sync``: upload runs recorded offline (the agent's journal) to a server."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from trickscope_cli.errors import CliError


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "sync",
        help="upload journals written while the server was unreachable",
        description="Replay the agent's on-disk journal(s) to a server. Uploads are idempotent: "
        "syncing twice stores every point once.",
    )
    parser.add_argument("journal", nargs="+", type=Path, help="journal file(s) or folder(s)")
    parser.add_argument("--url", help="server to upload to (default: TRICKSCOPE_URL)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from trickscope import replay

    url = args.url or os.environ.get("TRICKSCOPE_URL")
    if not url:
        raise CliError("no server given: pass --url or set TRICKSCOPE_URL")
    for path in journal_files(args.journal):
        try:
            requests = replay(path, url)
        except ConnectionError as exc:
            raise CliError(f"could not reach {url}: {exc}") from None
        print(f"trickscope: synced {path} ({requests} requests)", flush=True)
    return 0


def journal_files(paths: list[Path]) -> list[Path]:
    """The journal files named, with each folder standing for the ``*.jsonl`` files inside it.

    Rank 0's journal of a distributed run (``<id>.jsonl``) goes before the other ranks'
    (``<id>.rank<r>.jsonl``): it creates the run their points belong to.
    """
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(path.glob("*.jsonl"))
        elif path.exists():
            files.append(path)
        else:
            raise CliError(f"no such journal: {path}")
    return sorted(files, key=lambda file: ".rank" in file.name)  # stable: otherwise as given
