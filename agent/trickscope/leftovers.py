"""What killed training processes left on disk, sent by the next run that starts.

A process killed while it held points (SIGKILL, the OOM killer, a preempted job) leaves them in
hold files, and logged points past its memory bound in overflow files (:mod:`trickscope.held`).
``trickscope sync`` sends them. So does the next run started with the same ``journal_dir``: once
per process and folder, a thread of its own sends the files of dead processes whose run its
server knows, as ``trickscope sync`` would, and deletes them. What it does not send (another
server's run, a server it cannot reach, journals of requests no server has taken) it names in
one warning, with the command that sends it. Nothing here reaches the training loop: the thread
logs its failures and ends.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

from trickscope.announce import ensure_visible
from trickscope.config import AgentConfig
from trickscope.held import Orphan, send_orphan
from trickscope.journal import DEAD_SUFFIX, Upload
from trickscope.transport import Connection, Rejected, Unavailable

logger = logging.getLogger("trickscope")

_NAMED = 3  # files named in the warning; the rest are counted

_looked: set[Path] = set()  # folders this process has looked in
_looked_lock = threading.Lock()


@dataclass
class Leftovers:
    """What one look at ``journal_dir`` found and did."""

    sent: list[tuple[Orphan, Upload]] = field(default_factory=list)
    unsent: list[Path] = field(default_factory=list)  # dead processes' files left on disk
    journals: list[Path] = field(default_factory=list)  # requests no server has taken yet


def start(config: AgentConfig, *, run_id: str) -> threading.Thread | None:
    """Look for leftovers in ``config.journal_dir`` in a daemon thread; None when this process
    has looked there already."""
    folder = config.journal_dir.absolute()
    with _looked_lock:
        if folder in _looked:
            return None
        _looked.add(folder)
    thread = threading.Thread(
        target=_look, args=(config, run_id), name="trickscope-leftovers", daemon=True
    )
    thread.start()
    return thread


def _look(config: AgentConfig, run_id: str) -> None:
    try:
        recover(config, run_id=run_id)
    except Exception as exc:  # a leftover is worth a warning, never the training
        logger.warning(
            "trickscope: could not look for points left in %s: %s", config.journal_dir, exc
        )


def recover(config: AgentConfig, *, run_id: str) -> Leftovers:
    """Send the hold and overflow files of dead processes in ``config.journal_dir`` whose run
    the server knows (none when offline), and log what was sent and what is left.

    Args:
        config: The starting run's settings: its folder, server and token.
        run_id: The starting run, whose own files are left to it.
    """
    try:
        found = sorted(config.journal_dir.iterdir())
    except OSError:  # no folder yet: nothing was ever left there
        return Leftovers()
    leftovers = Leftovers(journals=[path for path in found if _is_journal(path, run_id)])
    orphans = [
        orphan
        for orphan in map(Orphan.of, found)
        if orphan is not None and orphan.run_id != run_id and not orphan.owner_alive
    ]
    if config.offline:
        leftovers.unsent = [orphan.path for orphan in orphans]
    elif orphans:
        _send(config, orphans, leftovers)
    _report(config, leftovers)
    return leftovers


def _is_journal(path: Path, run_id: str) -> bool:
    name = path.name  # <run>.jsonl, <run>.rank<r>.jsonl: the starting run's are its own
    return (
        name.endswith(".jsonl")
        and not name.endswith(DEAD_SUFFIX)
        and not name.startswith(f"{run_id}.")
    )


def _send(config: AgentConfig, orphans: list[Orphan], leftovers: Leftovers) -> None:
    connection = Connection(config.url, timeout=config.http_timeout, token=config.token)
    known: dict[str, bool] = {}
    try:
        for index, orphan in enumerate(orphans):
            try:
                if orphan.run_id not in known:
                    known[orphan.run_id] = _server_has(connection, orphan.run_id)
                if not known[orphan.run_id]:
                    leftovers.unsent.append(orphan.path)
                    continue
                upload = send_orphan(orphan, connection)
            except Unavailable as exc:
                logger.debug("trickscope: leftovers kept, the server is unreachable: %s", exc)
                leftovers.unsent += [later.path for later in orphans[index:]]
                return
            if upload is not None:  # None: another process sends it
                leftovers.sent.append((orphan, upload))
    finally:
        connection.close()


def _server_has(connection: Connection, run_id: str) -> bool:
    """Whether the server holds the run (the dead process's server, most likely)."""
    try:
        connection.send("GET", f"/api/v1/runs/{run_id}", b"")
    except Rejected:  # 404: another server's run; 401/403: this token may not read it
        return False
    return True


def _report(config: AgentConfig, leftovers: Leftovers) -> None:
    if not (leftovers.sent or leftovers.unsent or leftovers.journals):
        return
    ensure_visible()
    for orphan, upload in leftovers.sent:
        logger.info(
            "trickscope: sent the points of run %s that a killed process (pid %d) left in %s "
            "(%d requests)",
            orphan.run_id,
            orphan.pid,
            orphan.path,
            upload.sent,
        )
        if upload.set_aside:
            logger.warning(
                "trickscope: the server refused %d of those requests (the first: %s); they are "
                "set aside in %s",
                upload.set_aside,
                upload.first_refusal,
                orphan.dead_letter,
            )
    left = leftovers.unsent + leftovers.journals
    if left:
        names = ", ".join(path.name for path in left[:_NAMED])
        more = f" and {len(left) - _NAMED} more" if len(left) > _NAMED else ""
        logger.warning(
            "trickscope: %d file(s) in %s hold points no server has taken yet (%s%s): "
            "`trickscope sync %s --url <their server>` sends them",
            len(left),
            config.journal_dir,
            names,
            more,
            config.journal_dir,
        )
