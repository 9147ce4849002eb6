"""What the sender holds while nobody follows the run is copied to disk every ``flush_secs``; a
dead process's copies are sent by ``trickscope sync`` (:mod:`trickscope.held`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from array import array
from pathlib import Path
from typing import Any

import torch
from torch import nn

import trickscope
from tests.unit.agent.test_follow_cadence import NOBODY
from trickscope.batches import HistogramBuffer
from trickscope.held import Orphan, orphan_requests
from trickscope.scalars import HistogramRows, Layout, RowBlock, ScalarBuffer, read_overflow
from trickscope_wire import decode_f64, decode_i64


def _points(records: list[Any]) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for record in records:
        if isinstance(record, HistogramRows):
            out.setdefault(record.name, []).extend((step, 0.0) for step in record.steps)
        elif isinstance(record, RowBlock):
            for name, columns in record.columns():
                out.setdefault(name, []).extend(zip(columns.steps, columns.values, strict=True))
        else:
            name, columns = record
            out.setdefault(name, []).extend(zip(columns.steps, columns.values, strict=True))
    return out


def test_keep_copies_what_was_logged_since_the_last_copy_once(tmp_path: Path) -> None:
    buffer = ScalarBuffer(max_bytes=1 << 20, overflow_dir=tmp_path, stem="r", flush_points=1 << 20)
    wide = Layout(("a", "b"))
    copy = tmp_path / "copy"
    with copy.open("ab") as file:
        buffer.add(0, 1.0, [("loss", 0.5)])
        buffer.add_row(wide, 0, 1.0, array("d", [1.0, 2.0]))
        assert buffer.keep(file) == 3
        assert buffer.keep(file) == 0  # nothing new
        buffer.add(1, 2.0, [("loss", 0.25)])
        buffer.add_row(wide, 1, 2.0, array("d", [3.0, 4.0]))
        buffer.add(2, 3.0, [("a", 5.0)])  # "a" leaves the row block: its rows become columns
        assert buffer.keep(file) == 4
        taken = buffer.take()
        assert len(taken.series["loss"]) == 2  # still held, and handed over whole
        buffer.add(3, 4.0, [("loss", 0.125)])
        assert buffer.keep(file) == 1  # a take starts the copy afresh
    assert _points(list(read_overflow(copy))) == {
        "loss": [(0, 0.5), (1, 0.25), (3, 0.125)],
        "a": [(0, 1.0), (1, 3.0), (2, 5.0)],
        "b": [(0, 2.0), (1, 4.0)],
    }


def _train(run: trickscope.Run, steps: int) -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    run.watch(model, optimizer, every=1, hist_every=10)
    for step in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss = model(torch.randn(8, 4)).pow(2).mean()
        loss.backward()
        optimizer.step()
        run.log({"loss": loss.detach()}, step=step)
        time.sleep(0.01)


def _held_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.held.*"))


def test_while_nobody_follows_the_run_what_is_held_is_on_disk_and_goes_in_one_request(
    capture: Any, settings: dict[str, Any], wait_for: Any
) -> None:
    capture.captured.answer = NOBODY
    run = trickscope.init(
        project="p", url=capture.url, **settings | {"flush_secs": 0.05, "stats_flush_secs": 0.05}
    )
    run.log({"loss": 1.0}, step=-1)  # the first flush, answered "nobody follows"
    wait_for(lambda: any(path.endswith("/points") for _, path, _ in capture.captured.snapshot()))
    time.sleep(0.2)
    before = len(capture.captured.snapshot())
    _train(run, 30)
    time.sleep(0.3)  # a few copies
    journal = settings["journal_dir"]
    (held,) = _held_files(journal)
    copied = _points(list(read_overflow(held)))
    assert sorted(step for step, _ in copied["loss"]) == list(range(30))
    assert sorted(step for step, _ in copied["grad_norm/0.weight"]) == list(range(30))
    assert sorted(step for step, _ in copied["grad_hist/0.weight"]) == [0, 10, 20]
    # No points were sent meanwhile: the statistics and histograms wait as long as the logged
    # points (6 s).
    assert not any(path.endswith("/points") for _, path, _ in capture.captured.snapshot()[before:])
    run.finish()
    points = capture.captured.points()
    assert set(points["loss"]) == set(range(-1, 30))
    assert set(points["grad_norm/0.weight"]) == set(range(30))
    assert set(capture.captured.histograms()["grad_hist/0.weight"]) == {0, 10, 20}
    requests = [path for _, path, _ in capture.captured.snapshot()[before:]]
    assert sum(path.endswith("/points") for path in requests) == 1
    assert not _held_files(journal)  # delivered: the copies are gone


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_dead_process_hold_file_becomes_point_batches_that_sync_can_send_twice(
    tmp_path: Path,
) -> None:
    buffer = ScalarBuffer(max_bytes=1 << 20, overflow_dir=tmp_path, stem="r", flush_points=1 << 20)
    grads = Layout(("grad_norm/a", "grad_norm/b"))
    for step in range(5):
        buffer.add(step, float(step), [("loss", step / 2), ("lr", 0.1)])
        buffer.add_row(grads, step, 1.0, array("d", [1.0, 2.0]))
    path = tmp_path / f"run1.rank2.held.{_dead_pid()}.1"
    hists = {name: HistogramBuffer(2) for name in ("grad_hist/a", "grad_hist/b")}
    for hist in hists.values():
        hist.steps += [0, 4]
        hist.times += [1.0, 2.0]
        hist.lo += [-1.0, -2.0]
        hist.hi += [1.0, 2.0]
        hist.nonfinite += [0.0, 1.0]
        hist.counts += [3.0, 5.0, 7.0, 1.0]
    with path.open("ab") as file:
        buffer.keep(file)
        for name, hist in hists.items():
            hist.keep(file, name)
        file.write(b"\x02\x05")  # a record cut short by the kill: ignored
    orphan = Orphan.of(path)
    assert orphan is not None and orphan.run_id == "run1" and not orphan.owner_alive
    batches = [json.loads(request.body) for request in orphan_requests(orphan)]
    again = [json.loads(request.body) for request in orphan_requests(orphan)]
    assert [b["batch_id"] for b in batches] == [b["batch_id"] for b in again]  # idempotent
    batch, histograms = batches
    (hist_block,) = histograms["histogram_blocks"]
    assert hist_block["family"] == "grad_hist" and hist_block["layers"] == ["a", "b"]
    assert list(decode_f64(hist_block["counts"])) == [3.0, 5.0, 7.0, 1.0] * 2
    series = {s["name"]: s for s in batch["series"]}
    assert list(decode_i64(series["loss"]["steps"])) == list(range(5))
    assert list(decode_f64(series["loss"]["values"])) == [0.0, 0.5, 1.0, 1.5, 2.0]
    (block,) = batch["blocks"]
    assert block["family"] == "grad_norm" and block["layers"] == ["a", "b"]


def test_only_hold_and_overflow_names_are_orphans_and_a_live_owner_keeps_its_file() -> None:
    assert Orphan.of(Path("abc.jsonl")) is None
    assert Orphan.of(Path("abc.overflow.1")) is None  # no process id: not this format
    mine = Orphan.of(Path(f"abc.overflow.{os.getpid()}.3"))
    assert mine is not None and mine.run_id == "abc" and mine.owner_alive
