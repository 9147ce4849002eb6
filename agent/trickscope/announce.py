"""A run's default name and the one line that says where to watch it.

The line goes through ``logging`` (logger ``trickscope``, level INFO). A script that never
configured logging would not see an INFO line (Python's last-resort handler shows warnings only),
so, as Lightning does for its own logger, a plain stderr handler is put on the ``trickscope``
logger when neither it nor the root logger has one; it then stops propagating, so that a root
handler configured later does not print each line twice. An application that configures logging
first keeps full control: nothing is added and the line reaches its handlers.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

logger = logging.getLogger("trickscope")

_HANDLER_NAME = "trickscope-default"


def script_name(argv: list[str] | None = None) -> str:
    """What is running: the script's file stem, ``notebook`` under Jupyter, ``python`` for an
    interactive interpreter or ``python -c``; a package run with ``-m`` is named by its
    directory."""
    if "ipykernel" in sys.modules:
        return "notebook"
    argv = sys.argv if argv is None else argv
    first = argv[0] if argv else ""
    if not first or first in ("-c", "-"):
        return "python"
    path = Path(first)
    if "ipykernel" in path.name:
        return "notebook"
    if path.stem == "__main__" and path.parent.name:
        return path.parent.name
    return path.stem or "python"


def default_name(run_id: str, argv: list[str] | None = None) -> str:
    """``<script>-<first six characters of the run id>``, e.g. ``train-3f2a9c``."""
    return f"{script_name(argv)}-{run_id[:6]}"


def ensure_visible() -> None:
    """Give the ``trickscope`` logger a stderr handler at INFO when logging is unconfigured."""
    if logger.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    logger.propagate = False


def announce_run(name: str, url: str, *, offline: bool, journal_dir: Path) -> None:
    """Log, once per run, where it can be watched."""
    ensure_visible()
    if offline:
        logger.info(
            "trickscope: run %s is offline, journaled in %s; after `trickscope sync` it is at %s",
            name,
            journal_dir,
            url,
        )
    else:
        logger.info("trickscope: run %s at %s", name, url)
