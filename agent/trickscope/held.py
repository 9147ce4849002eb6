"""A copy on disk of the points the sender holds, and the recovery of what a dead process left.

While nobody follows a run live, the sender sends every ``unfollowed_flush_secs`` (5 minutes by
default): fewer, larger requests, which is most of what the run costs the server. What it holds
meanwhile is not only in memory: every ``flush_secs`` it appends what was logged since (the
logged points and ``watch``'s per-layer statistics and histograms) to a hold file
``<stem>.held.<pid>.<n>`` in ``journal_dir``, in the overflow format of
:mod:`trickscope.scalars` (with a record kind of its own for histograms). A killed process
(SIGKILL, the OOM killer) so loses at most ``flush_secs`` of points, as it would sending every
``flush_secs``. A hold file is deleted once the requests made of its points left memory: the
server took them, or they are in the run's journal.

Overflow files (``<stem>.overflow.<pid>.<n>``: logged points past the memory bound, read back by
the sender) and hold files carry the id of the process that wrote them, which also holds a lock
on them while they are its own (:mod:`trickscope._ownership`). ``trickscope sync``, and any run
that starts later with the same ``journal_dir`` (:mod:`trickscope.leftovers`), send those whose
process is gone (:func:`send_orphan`); a live process's are its own.
"""

from __future__ import annotations

import io
import os
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from trickscope import _ownership
from trickscope._sanitize import MAX_SERIES_CHARS, clean_text
from trickscope.batches import HistogramBuffer, encode_points, histogram_payloads, point_batch
from trickscope.journal import Journal, Request, Upload, dead_letter_path, upload_requests
from trickscope.logged import LoggedBatcher
from trickscope.scalars import HistogramRows, RowBlock, owned_file_name, read_overflow
from trickscope.transport import Connection
from trickscope_wire import SeriesColumns

HELD = "held"
_NAME = re.compile(r"^(?P<stem>.+)\.(?P<kind>held|overflow)\.(?P<pid>\d+)\.(?P<n>\d+)$")
_RANK = re.compile(r"\.rank\d+$")
# Points per recovered request: the sender's own batch size (``sender.LOG_BATCH_POINTS``).
_BATCH_POINTS = 200_000


@dataclass(frozen=True)
class Orphan:
    """A hold or overflow file, by its name: the run it belongs to and the process that wrote
    it."""

    path: Path
    run_id: str
    pid: int

    @classmethod
    def of(cls, path: Path) -> Orphan | None:
        """The file's owner, or None when the name is not a hold or overflow file's."""
        match = _NAME.match(path.name)
        if match is None:
            return None
        return cls(path, _RANK.sub("", match["stem"]), int(match["pid"]))

    @property
    def owner_alive(self) -> bool:
        """Whether the process that wrote the file still runs: on this machine by its pid, on
        any machine sharing the folder by its lock (another process sending it counts too)."""
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return _ownership.held_elsewhere(self.path)
        except PermissionError:  # someone else's process: alive
            return True
        return True

    @property
    def dead_letter(self) -> Path:
        """Where the requests the server refuses are set aside: the run's dead-letter file."""
        return dead_letter_path(self.path.with_name(f"{self.run_id}.jsonl"))


def send_orphan(orphan: Orphan, connection: Connection) -> Upload | None:
    """Send a dead process's hold or overflow file as point batches, then delete it.

    Requests the server refuses are set aside in :attr:`Orphan.dead_letter`. Returns None, and
    sends nothing, when another process holds the file (its writer on another machine, or
    another process sending it).

    Raises:
        Unavailable: The server could not be reached; the file is kept.
    """
    claimed = _ownership.claim(orphan.path)
    if claimed is None:
        return None
    try:
        set_aside = Journal(orphan.dead_letter)
        try:
            result = upload_requests(orphan_requests(orphan), connection, set_aside=set_aside)
        finally:
            set_aside.close()
        orphan.path.unlink(missing_ok=True)
        return result
    finally:
        claimed.close()


def orphan_requests(orphan: Orphan) -> Iterator[Request]:
    """The point batches that send a hold or overflow file's points to the server, in the order
    they were logged. Batch ids derive from the file's name, so that sending them again (an
    interrupted sync) stores every point once."""
    path = f"/api/v1/runs/{orphan.run_id}/points"
    batches: list[list[SeriesColumns]] = []
    names: dict[str, str] = {}

    def clean(name: str) -> str:
        cleaned = names.get(name)
        if cleaned is None:
            cleaned = names[name] = clean_text(name, MAX_SERIES_CHARS)
        return cleaned

    batcher = LoggedBatcher(_BATCH_POINTS, batches.append, clean)
    # A hold period's histograms (the sender flushes past its bound on what it holds): sent
    # together at the end, as the sender would have, in blocks by family.
    histograms: dict[str, HistogramBuffer] = {}
    number = 0
    for record in read_overflow(orphan.path):
        if isinstance(record, HistogramRows):
            held = histograms.get(record.name)
            if held is not None and held.bins != record.bins:  # the bin count changed: apart
                yield _request(path, orphan.path.name, number, [], histograms, clean)
                number += 1
                histograms, held = {}, None
            if held is None:
                held = histograms[record.name] = HistogramBuffer(record.bins)
            held.extend(record)
        elif isinstance(record, RowBlock):
            batcher.add_block(record)
        else:
            batcher.add(*record)
        while batches:  # one batch's columns in memory at a time
            yield _request(path, orphan.path.name, number, batches.pop(0))
            number += 1
    batcher.flush()
    for series in batches:
        yield _request(path, orphan.path.name, number, series)
        number += 1
    if histograms:
        yield _request(path, orphan.path.name, number, [], histograms, clean)


def _request(
    path: str,
    file: str,
    number: int,
    series: list[SeriesColumns],
    histograms: dict[str, HistogramBuffer] | None = None,
    clean: Callable[[str], str] = str,
) -> Request:
    batch_id = uuid.uuid5(uuid.NAMESPACE_URL, f"trickscope-held:{file}:{number}").hex
    singles, blocks = histogram_payloads(histograms or {}, clean)
    return Request("POST", path, encode_points(point_batch(batch_id, series, singles, blocks)))


class HoldFiles:
    """This process's hold files of one run (or rank): the one being written, and those whose
    points went into requests that may still be in memory.

    Args:
        directory: ``journal_dir``.
        stem: The run's file stem (its id, with the rank for ranks other than 0).
    """

    def __init__(self, directory: Path, stem: str) -> None:
        self._directory = directory
        self._stem = stem
        self._file: BinaryIO | None = None
        self._path: Path | None = None
        self._count = 0
        # Closed files still open: their lock says they are this process's until deleted.
        self._settling: list[tuple[Path, BinaryIO]] = []

    def append(self, records: io.BytesIO) -> None:
        """Append overflow records (nothing when empty), flushed to the OS: a killed process's
        points are then on disk, not in its memory."""
        data = records.getbuffer()
        if not data.nbytes:
            return
        if self._file is None:
            self._directory.mkdir(parents=True, exist_ok=True)
            self._count += 1
            self._path = self._directory / owned_file_name(self._stem, HELD, self._count)
            self._file = open(self._path, "ab")
            _ownership.hold(self._file)
        self._file.write(data)
        self._file.flush()

    def close(self) -> None:
        """Everything held was made into requests: the file is done, to be deleted by
        :meth:`settle` once those requests left memory."""
        if self._file is not None and self._path is not None:
            self._file.flush()
            self._settling.append((self._path, self._file))
        self._file = self._path = None

    def settle(self) -> None:
        """Delete the closed files: the requests made of their points were delivered or
        journaled."""
        for path, file in self._settling:
            path.unlink(missing_ok=True)
            file.close()
        self._settling.clear()
