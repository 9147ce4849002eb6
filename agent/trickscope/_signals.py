"""Ending runs when the process is told to stop (``SIGTERM``).

A scheduler's timeout, ``kill`` or a container stop sends ``SIGTERM``, whose default action ends
the process at once: ``atexit`` never runs and the run would stay ``running``. While runs are
open, and only where ``SIGTERM`` still has its default action and this is the main thread (a
handler of the user's or the framework's is never replaced), a handler marks them ``crashed``
(the process did not end on its own; ``failed`` is kept for an exception in the script), waits a
short while for the server, then restores the default action and re-delivers the signal, so the
process ends as it would have.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType

logger = logging.getLogger("trickscope")

SIGTERM_STATUS = "crashed"
SIGTERM_TIMEOUT = 3.0  # seconds for the server; what it has not taken stays in the journal

_Finish = Callable[[str, float], None]
_open: dict[int, _Finish] = {}  # id(run) -> its finish
_lock = threading.Lock()
_installed = False


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    with _lock:
        finishes = list(_open.values())
        _open.clear()
    for finish in finishes:
        try:
            finish(SIGTERM_STATUS, SIGTERM_TIMEOUT)
        except Exception as exc:  # the signal is re-delivered whatever happened
            logger.warning("trickscope: could not finish a run on SIGTERM (%s)", exc)
    _restore()
    # Unconditionally: a framework that saved and later restored its own view of the handlers
    # (Lightning does, around fit) can leave this one installed when no run is open any more.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _restore() -> None:
    global _installed
    if _installed and signal.getsignal(signal.SIGTERM) is _on_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _installed = False


def watch_sigterm(key: int, finish: _Finish) -> None:
    """Finish with ``finish(status, timeout)`` on ``SIGTERM`` (see the module docstring)."""
    global _installed
    if threading.current_thread() is not threading.main_thread():
        return
    with _lock:
        if not _installed:
            # This module's own handler, left behind by a framework's restore, counts as the
            # default: it ends the process as the default does once no run is open.
            if signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, _on_sigterm):
                return
            signal.signal(signal.SIGTERM, _on_sigterm)
            _installed = True
        _open[key] = finish


def unwatch_sigterm(key: int) -> None:
    """Forget a finished run; the last one restores the default action (main thread only)."""
    with _lock:
        _open.pop(key, None)
        if _open or threading.current_thread() is not threading.main_thread():
            return
        _restore()
