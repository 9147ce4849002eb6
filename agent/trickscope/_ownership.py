"""Who owns a hold or overflow file: an advisory lock its writer holds while the file is its own.

The file's name carries its writer's pid (:func:`trickscope.scalars.owned_file_name`), which
tells whether the writer still runs only on the machine that wrote it. A ``journal_dir`` shared
between machines (a home directory on NFS) needs more: the writer holds a shared ``flock`` on
each of its files until it is done with them, and a process that sends a dead writer's file
first takes an exclusive one, which fails while the writer, or another sender, holds the file.
Linux emulates ``flock`` on NFS with byte-range locks the NFS server arbitrates, so the lock is
seen from every machine (the tests take it from another process; no NFS mount is tested). Where
``fcntl`` does not exist (Windows) only the pid is checked.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


def hold(file: BinaryIO) -> None:
    """Mark ``file`` (open for writing by its owner) as owned until it is closed."""
    if fcntl is None:
        return
    try:
        fcntl.flock(file.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        pass  # a file system without locks: the pid in the name is all there is


def held_elsewhere(path: Path) -> bool:
    """Whether some process holds ``path``: its writer, or a process sending it.

    Only for files of other processes: a process's own byte-range locks (``flock`` on NFS) do
    not conflict with each other, and closing this probe would drop them.
    """
    claimed = claim(path)
    if claimed is None:
        return path.exists()
    claimed.close()
    return False


def claim(path: Path) -> BinaryIO | None:
    """``path`` opened for reading under an exclusive lock, kept until the file is closed; None
    when another process holds it, or it is gone."""
    try:
        file = open(path, "rb")
    except OSError:
        return None
    if fcntl is not None:
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.close()
            return None
        except OSError:
            pass  # no locks on this file system
    if os.fstat(file.fileno()).st_nlink == 0:  # sent and deleted while this waited
        file.close()
        return None
    return file
