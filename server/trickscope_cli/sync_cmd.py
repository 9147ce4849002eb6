"""``trickscope sync``: upload runs recorded offline (the agent's journal) to a server, and the
points a killed training process left on disk.

A journal that was uploaded whole is deleted: the server holds its requests. A request the
server refuses (a 4xx answer, or a 500 every time) does not stop the others: it is set aside in
the journal's dead-letter file (``<run id>.dead.jsonl``), and the command says what the server
answered and exits with 1. Dead-letter files (the agent's or this command's) are replayed only
when named: what the server refused once is retried once its cause is fixed, not at every sync.

Beside its journal, the agent keeps on disk what it holds between slow flushes (hold files,
``<run>.held.<pid>.<n>``) and logged points past its memory bound (``<run>.overflow.<pid>.<n>``):
its own to send while it runs. A folder's files of a process that is gone are sent as point
batches and deleted; those of a live process are left to it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from trickscope_cli.errors import CliError
from trickscope_cli.help_format import ExamplesFormatter
from trickscope_cli.progress import progress_bar

_DEAD_SUFFIX = ".dead.jsonl"  # trickscope.journal.DEAD_SUFFIX, without importing the agent


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "sync",
        help="upload journals written while the server was unreachable",
        description="Replay the agent's on-disk journal(s) to a server, and send the points a "
        "killed training process held on disk (<run>.held.<pid>.<n>, <run>.overflow.<pid>.<n>; "
        "a live process's are left to it). Uploads are idempotent: syncing twice stores every "
        "point once. A file uploaded whole is deleted; requests the server refuses are set "
        "aside in <run>.dead.jsonl, replayed when named.",
        epilog="examples:\n"
        "  trickscope sync ~/.cache/trickscope/journal --url http://127.0.0.1:8000\n"
        "  trickscope sync RUN_ID.dead.jsonl     retry what the server refused once",
        formatter_class=ExamplesFormatter,
    )
    parser.add_argument("journal", nargs="+", type=Path, help="journal file(s) or folder(s)")
    parser.add_argument("--url", help="server to upload to (default: TRICKSCOPE_URL)")
    parser.add_argument(
        "--token", help="a write token of the server (default: TRICKSCOPE_TOKEN)", default=None
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    url = args.url or os.environ.get("TRICKSCOPE_URL")
    if not url:
        raise CliError("no server given: pass --url or set TRICKSCOPE_URL")
    token = args.token or os.environ.get("TRICKSCOPE_TOKEN") or None
    files, skipped = journal_files(args.journal)
    held, live = held_files(args.journal)
    refused = False
    total = sum(map(request_count, files)) + len(held)
    with progress_bar(total, desc="sync", unit="req") as bar:
        for path in files:
            bar.set_description(f"sync {path.name}")
            refused |= _sync_one(path, url, token, bar)
        for orphan in held:  # after the journals: the run's creation may be in one
            bar.set_description(f"sync {orphan.path.name}")
            refused |= _sync_orphan(orphan, url, token, bar)
    _left_alone(live, "file(s) of running processes", "they send their points themselves")
    _left_alone(
        skipped,
        "dead-letter file(s)",
        "they hold requests the server refused before; name one to retry it",
    )
    return 1 if refused else 0


def _left_alone(paths: list[Path], what: str, why: str) -> None:
    if paths:
        names = ", ".join(str(path) for path in paths)
        print(f"trickscope: left {len(paths)} {what} alone ({names}): {why}", file=sys.stderr)


def request_count(path: Path) -> int:
    """The requests of a journal file: its lines (one request each), counted in blocks."""
    with path.open("rb") as file:
        return sum(block.count(b"\n") for block in iter(lambda: file.read(1 << 20), b""))


class _Ticking:
    """A connection that moves the progress bar on after each request it was given, delivered
    or not (a refused one is set aside and the upload goes on)."""

    def __init__(self, connection: Any, bar: Any) -> None:
        self._connection = connection
        self._bar = bar

    def send_with_retries(self, method: str, path: str, body: bytes, retries: int) -> int:
        try:
            return int(self._connection.send_with_retries(method, path, body, retries))
        finally:
            self._bar.update(1)


def _sync_one(path: Path, url: str, token: str | None, bar: Any) -> bool:
    """Upload one file; True when the server refused some of its requests."""
    from trickscope.journal import Journal, dead_letter_path, upload
    from trickscope.transport import Connection, Unavailable

    replaying_dead = path.name.endswith(_DEAD_SUFFIX)
    dead = dead_letter_path(path)
    # A dead-letter file being retried keeps, in a new copy, only what is refused again.
    set_aside = Journal(dead.with_name(dead.name + ".retry") if replaying_dead else dead)
    try:
        connection = Connection(url, timeout=30.0, token=token)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    try:
        result = upload(path, _Ticking(connection, bar), set_aside=set_aside)  # type: ignore[arg-type]
    except Unavailable as exc:
        set_aside.close()
        if exc.status is None:
            raise CliError(f"could not reach {url}: {exc}; {path} is kept") from None
        raise CliError(f"{exc}; {path} is kept, sync again later") from None
    except ValueError as exc:
        set_aside.close()
        raise CliError(str(exc)) from None
    finally:
        connection.close()
    kept = set_aside.close()
    if replaying_dead and kept is not None:
        os.replace(kept, path)
    else:
        path.unlink(missing_ok=True)
    bar.write(f"trickscope: synced {path} ({result.sent} requests)")  # clears the bar first
    if result.set_aside:
        bar.write(
            f"trickscope: the server refused {result.set_aside} request(s) of {path}; the first: "
            f"{result.first_refusal}. They are set aside in {dead}: sync it once the cause "
            "is fixed",
            file=sys.stderr,
        )
    return bool(result.set_aside)


def _sync_orphan(orphan: Any, url: str, token: str | None, bar: Any) -> bool:
    """Send a dead process's hold or overflow file; True when the server refused some of it."""
    from trickscope.held import send_orphan
    from trickscope.transport import Connection, Unavailable

    try:
        connection = Connection(url, timeout=30.0, token=token)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    try:
        result = send_orphan(orphan, connection)
    except Unavailable as exc:
        raise CliError(f"could not send {orphan.path}: {exc}; it is kept") from None
    finally:
        connection.close()
    bar.update(1)
    if result is None:
        bar.write(f"trickscope: left {orphan.path} alone: another process holds it")
        return False
    bar.write(f"trickscope: synced {orphan.path} ({result.sent} requests)")
    if result.set_aside:
        bar.write(
            f"trickscope: the server refused {result.set_aside} request(s) of {orphan.path}; "
            f"the first: {result.first_refusal}. They are set aside in {orphan.dead_letter}",
            file=sys.stderr,
        )
    return bool(result.set_aside)


def held_files(paths: list[Path]) -> tuple[list[Any], list[Path]]:
    """The hold and overflow files in the folders named (or named themselves) whose process is
    gone, and those of processes still running."""
    from trickscope.held import Orphan

    found: list[Path] = []
    for path in paths:
        found.extend(sorted(path.iterdir()) if path.is_dir() else [path])
    orphans, live = [], []
    for file in found:
        orphan = Orphan.of(file)
        if orphan is None or not file.is_file():
            continue
        if orphan.owner_alive:
            live.append(file)
        else:
            orphans.append(orphan)
    return orphans, live


def journal_files(paths: list[Path]) -> tuple[list[Path], list[Path]]:
    """The journal files named, with each folder standing for the ``*.jsonl`` files inside it,
    and the dead-letter files of those folders, which are left alone.

    Rank 0's journal of a distributed run (``<id>.jsonl``) goes before the other ranks'
    (``<id>.rank<r>.jsonl``): it creates the run their points belong to.
    """
    from trickscope.held import Orphan

    files: list[Path] = []
    skipped: list[Path] = []
    for path in paths:
        if path.is_dir():
            for file in sorted(path.glob("*.jsonl")):
                (skipped if file.name.endswith(_DEAD_SUFFIX) else files).append(file)
        elif path.exists():
            if Orphan.of(path) is None:  # a hold or overflow file goes by held_files
                files.append(path)
        else:
            raise CliError(f"no such journal: {path}")
    return sorted(files, key=lambda file: ".rank" in file.name), skipped
