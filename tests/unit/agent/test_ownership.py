"""A hold or overflow file is its writer's while the writer holds its lock, on any machine that
shares the folder; only then does its pid decide (:mod:`trickscope._ownership`)."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

from trickscope import _ownership
from trickscope.held import HoldFiles, Orphan, send_orphan
from trickscope.transport import Connection

_HOLD_LOCK = """
import fcntl, sys
file = open(sys.argv[1], "rb")
fcntl.flock(file.fileno(), fcntl.LOCK_SH)
print("held", flush=True)
sys.stdin.read()
"""


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_hold_file_stays_its_writers_until_its_requests_left_memory(tmp_path: Path) -> None:
    hold = HoldFiles(tmp_path, "run")
    hold.append(io.BytesIO(b"\x00"))
    (path,) = tmp_path.iterdir()
    assert _ownership.claim(path) is None  # being written
    hold.close()
    assert _ownership.claim(path) is None  # made into requests that may still be in memory
    hold.settle()
    assert not path.exists()


def test_a_writer_this_machine_cannot_see_keeps_its_file_while_it_holds_the_lock(
    tmp_path: Path,
) -> None:
    """A pid that is not running here may be a process on another machine sharing the folder:
    its lock says so, and neither sync nor a starting run sends the file meanwhile."""
    path = tmp_path / f"run.held.{_dead_pid()}.1"
    path.write_bytes(b"")
    orphan = Orphan.of(path)
    assert orphan is not None
    writer = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "held"
        assert orphan.owner_alive
        unused = Connection("http://127.0.0.1:9", timeout=0.1)
        assert send_orphan(orphan, unused) is None and path.exists()
    finally:
        writer.communicate("")
    assert not orphan.owner_alive  # the writer is gone, and its lock with it


def test_a_claimed_file_is_no_other_senders(tmp_path: Path) -> None:
    path = tmp_path / f"run.overflow.{_dead_pid()}.1"
    path.write_bytes(b"")
    claimed = _ownership.claim(path)
    assert claimed is not None
    try:
        assert _ownership.claim(path) is None
    finally:
        claimed.close()
    path.unlink()
    assert _ownership.claim(path) is None  # gone: nothing to send
