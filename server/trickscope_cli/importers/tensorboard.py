"""TensorBoard event files as runs: each folder that holds event files is one run.

All event files of a folder are read in name order (their names start with the writer's start
time), so a run resumed into the same folder is one run. What is kept, per event, with its step
and wall time:

- scalars: ``simple_value`` (TF1, torch's ``add_scalar``) and tensor summaries of the scalars
  plugin (TF2, ``new_style=True``), under their tags as series names;
- histograms: ``HistogramProto`` (TF1, torch's ``add_histogram``) and tensor summaries of the
  histograms plugin (TF2), as buckets (:mod:`.histograms` turns them into the server's bins);
- hyperparameters of the hparams plugin (``session_start_info``) as the run's config.

Images, audio, text, graphs and other plugins' data are counted and left out. The
``tensorboard`` package (the ``trickscope[tensorboard]`` extra) reads the files; it is imported
only here, when an import runs.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from trickscope_cli.importers.histograms import from_limits, from_triples, make_buckets
from trickscope_cli.importers.runs import ImportedRun, Series
from trickscope_wire.limits import MAX_SERIES_NAME_CHARS

EVENT_FILE_MARK = "tfevents"  # TensorBoard's own test for an event file's name
INSTALL_HINT = "pip install 'trickscope[tensorboard]'"

# torch's ``SummaryWriter.add_hparams`` writes its hyperparameters and metrics into a subfolder
# named ``str(time.time())`` of the run's folder: it belongs to that run.
_HPARAMS_FOLDER = re.compile(r"^\d{9,}\.\d+$")


class TensorboardMissing(ImportError):
    """The ``tensorboard`` package is not installed."""


@dataclass(frozen=True)
class EventFolder:
    """A run's event files: ``key`` is the folder relative to the logdir (``.`` for itself)."""

    key: str
    files: list[Path]

    @property
    def size(self) -> int:
        return sum(path.stat().st_size for path in self.files)


def find_runs(logdir: Path) -> list[EventFolder]:
    """The folders under ``logdir`` (itself included) that hold event files, by path."""
    folders: dict[Path, list[Path]] = {}
    for root, subfolders, files in os.walk(logdir):
        subfolders.sort()
        events = [Path(root, name) for name in files if EVENT_FILE_MARK in name]
        if events:
            folders[Path(root)] = events
    for folder in sorted(folders, key=lambda path: len(path.parts), reverse=True):
        if folder != logdir and _HPARAMS_FOLDER.match(folder.name) and folder.parent in folders:
            folders[folder.parent] += folders.pop(folder)
    return [
        EventFolder(
            key=folder.relative_to(logdir).as_posix(),
            files=sorted(files, key=lambda path: path.name),
        )
        for folder, files in sorted(folders.items())
    ]


def origin(first_file: Path) -> str:
    """What identifies a run's logs: its first event file's name (the writer's start time, host
    and process) and first record (the file version event, stamped when the file was created).
    Neither changes as the run goes on writing, nor when the logdir is moved."""
    with first_file.open("rb") as file:
        header = file.read(8)
        length = struct.unpack("<Q", header)[0] if len(header) == 8 else 0
        first_record = header + file.read(4 + min(length, 1 << 16))
    return f"{first_file.name}:{hashlib.sha256(first_record).hexdigest()}"


def _tensorboard() -> SimpleNamespace:
    """The parts of the ``tensorboard`` package the reader uses, imported on first use."""
    try:
        from google.protobuf import json_format
        from tensorboard.backend.event_processing.event_file_loader import (
            LegacyEventFileLoader,
        )
        from tensorboard.plugins.hparams import plugin_data_pb2
        from tensorboard.util import tensor_util
    except ImportError as exc:
        raise TensorboardMissing(
            f"reading TensorBoard event files needs the tensorboard package ({exc}): {INSTALL_HINT}"
        ) from None
    return SimpleNamespace(
        loader=LegacyEventFileLoader,
        to_python=json_format.MessageToDict,
        hparams_data=plugin_data_pb2.HParamsPluginData,
        to_array=tensor_util.make_ndarray,
    )


def check_installed() -> None:
    """Raise :class:`TensorboardMissing` with the install command when the package is absent."""
    _tensorboard()


def read_run(folder: EventFolder, on_bytes: Callable[[int], Any] = lambda n: None) -> ImportedRun:
    """Read a run's event files; ``on_bytes`` is told how much of them has been read."""
    tb = _tensorboard()
    run = ImportedRun(
        key=folder.key,
        origin=origin(folder.files[0]),
        system={
            "imported_from": {
                "tool": "tensorboard",
                "folder": str(folder.files[0].parent.resolve()),
                "event_files": [path.name for path in folder.files],
            }
        },
    )
    reader = _EventReader(run, tb)
    for path in folder.files:
        expected, read = path.stat().st_size, 0
        for event in tb.loader(str(path)).Load():
            reader.add(event)
            size = event.ByteSize() + 16  # a record's length, CRCs and data
            read += size
            on_bytes(size)
        if read < expected:  # the reader stops quietly at a bad record: say so
            run.skipped["event files read only in part (corrupt, or still being written)"] += 1
        on_bytes(max(0, expected - read))
    return run


class _EventReader:
    """Files the values of a run's events into an :class:`ImportedRun`."""

    def __init__(self, run: ImportedRun, tb: SimpleNamespace) -> None:
        self.run = run
        self.tb = tb
        # TF2 writers attach a tag's metadata (its plugin) to its first value in each file only.
        self.plugins: dict[str, str] = {}

    def add(self, event: Any) -> None:
        self.run.saw(event.wall_time)
        if event.HasField("graph_def") or event.HasField("meta_graph_def"):
            self.run.skipped["graph"] += 1
        if not event.HasField("summary"):
            return
        for value in event.summary.value:
            plugin = value.metadata.plugin_data.plugin_name
            if plugin:
                self.plugins[value.tag] = plugin
            else:
                plugin = self.plugins.get(value.tag, "")
            self._add_value(value, plugin, event.step, event.wall_time)

    def _add_value(self, value: Any, plugin: str, step: int, wall_time: float) -> None:
        kind = value.WhichOneof("value")
        if plugin == "hparams":
            self._hparams(value.metadata.plugin_data.content)
        elif len(value.tag) > MAX_SERIES_NAME_CHARS:
            self.run.skipped[f"tags over {MAX_SERIES_NAME_CHARS} characters"] += 1
        elif kind == "simple_value":
            self._scalar(value.tag, step, value.simple_value, wall_time)
        elif kind == "histo":
            h = value.histo
            self._histogram(
                value.tag, step, wall_time, from_limits(h.bucket_limit, h.bucket, h.min, h.max)
            )
        elif kind == "tensor" and plugin == "scalars":
            array = self.tb.to_array(value.tensor)
            if array.size == 1:
                self._scalar(value.tag, step, float(array.reshape(-1)[0]), wall_time)
            else:
                self.run.skipped["scalars that are not one number"] += 1
        elif kind == "tensor" and plugin == "histograms":
            self._histogram(
                value.tag, step, wall_time, from_triples(self.tb.to_array(value.tensor))
            )
        else:
            self.run.skipped[plugin or kind or "empty values"] += 1

    def _scalar(self, tag: str, step: int, value: float, wall_time: float) -> None:
        series = self.run.scalars.get(tag)
        if series is None:
            series = self.run.scalars[tag] = Series()
        series.append(step, value, wall_time)

    def _histogram(self, tag: str, step: int, wall_time: float, parts: Any) -> None:
        buckets = None if parts is None else make_buckets(step, wall_time, *parts)
        if buckets is None:
            self.run.skipped["histograms without finite bucket edges"] += 1
            return
        self.run.histograms.setdefault(tag, []).append(buckets)

    def _hparams(self, content: bytes) -> None:
        data = self.tb.hparams_data.FromString(content)
        if data.WhichOneof("data") == "session_start_info":
            for key, value in data.session_start_info.hparams.items():
                self.run.config[key] = self.tb.to_python(value)
