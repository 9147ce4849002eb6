"""The TensorBoard reader and the histogram conversion, on event files written here."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from tensorboard.plugins.histogram import summary_v2 as histogram_summary
from torch.utils.tensorboard import SummaryWriter

from trickscope_cli.importers.histograms import (
    DEFAULT_BINS,
    from_limits,
    make_buckets,
    to_bins,
)
from trickscope_cli.importers.runs import run_id
from trickscope_cli.importers.tensorboard import find_runs, origin, read_run
from trickscope_cli.importers.upload import point_batches


def test_folders_with_event_files_are_runs_and_add_hparams_subfolders_join_theirs(
    tmp_path: Path,
) -> None:
    with SummaryWriter(str(tmp_path)) as writer:  # the logdir itself is a run too
        writer.add_scalar("a", 1.0, 0)
    with SummaryWriter(str(tmp_path / "b" / "c")) as writer:
        writer.add_scalar("a", 1.0, 0)
        writer.add_hparams({"lr": 0.5}, {"hp/metric": 1.0})  # into b/c/<time.time()>
    (tmp_path / "empty").mkdir()
    runs = find_runs(tmp_path)
    assert [run.key for run in runs] == [".", "b/c"]
    assert len(runs[1].files) == 2
    assert read_run(runs[1]).config == {"lr": 0.5}


def test_tensorflow2_histograms_and_unknown_plugins(tmp_path: Path) -> None:
    values = np.linspace(-1.0, 3.0, 41)
    with SummaryWriter(str(tmp_path)) as writer:
        # TF2's layout: a tensor of (left, right, count) rows, equal widths.
        summary = histogram_summary.histogram_pb("w", values, buckets=8)
        writer.file_writer.add_summary(summary, 5, walltime=12.5)
        writer.add_text("notes", "hello", 0)
    (run,) = [read_run(folder) for folder in find_runs(tmp_path)]
    (h,) = run.histograms["w"]
    assert (h.step, h.wall_time) == (5, 12.5)
    assert h.edges[0] == -1.0 and h.edges[-1] == 3.0 and h.counts.sum() == 41
    assert h.equal_width
    assert run.skipped == {"text": 1}
    assert not run.scalars


def test_tensorflow1_buckets_up_to_dbl_max_are_bounded_by_the_recorded_extremes() -> None:
    limits = [-1.0, 0.0, 1.0, 2.0, 1.7976931348623157e308]
    edges, counts = from_limits(limits, [0, 3, 5, 0, 2], -0.5, 10.0)
    assert edges.tolist() == [-0.5, 0.0, 1.0, 2.0, 10.0]
    assert counts.tolist() == [3, 5, 0, 2]
    edges, counts = from_limits(limits, [4, 0, 0, 0, 0], -3.0, -2.0)  # an open first bucket
    assert edges.tolist() == [-3.0, -2.0] and counts.tolist() == [4]


def test_unequal_buckets_are_rebinned_keeping_their_total_and_range() -> None:
    h = make_buckets(0, 0.0, np.array([0.0, 1.0, 3.0, 7.0]), np.array([2.0, 4.0, 8.0]))
    assert h is not None and not h.equal_width
    binned = to_bins([h])
    assert binned.bins == DEFAULT_BINS
    assert (binned.lo, binned.hi) == ([0.0], [7.0])
    assert binned.counts.sum() == pytest.approx(14.0, rel=1e-12)
    # Even density inside each bucket: the first bin, [0, 7/64], holds 2 * 7/64 of bucket one.
    assert binned.counts[0, 0] == pytest.approx(2.0 * 7 / 64)


def test_equal_width_histograms_of_different_counts_share_bins_exactly() -> None:
    narrow = make_buckets(1, 0.0, np.array([0.0, 0.5, 1.0]), np.array([1.0, 2.0]))
    wide = make_buckets(2, 0.0, np.linspace(-2.0, 2.0, 5), np.array([1.0, 0.0, 3.0, 4.0]))
    assert narrow is not None and wide is not None
    binned = to_bins([narrow, wide])
    assert binned.bins == 4
    # The narrow one keeps its bins (width 0.5) and gains two empty ones on the right.
    assert (binned.lo[0], binned.hi[0]) == (0.0, 2.0)
    assert binned.counts[0].tolist() == [1.0, 2.0, 0.0, 0.0]
    assert binned.counts[1].tolist() == [1.0, 0.0, 3.0, 4.0]


def test_run_ids_and_batches_are_the_same_for_the_same_logs(tmp_path: Path) -> None:
    with SummaryWriter(str(tmp_path)) as writer:
        for step in range(120):
            writer.add_scalar("loss", math.nan if step == 3 else float(step), step)
            writer.add_scalar("acc", step / 120, step)
    (folder,) = find_runs(tmp_path)
    first, second = read_run(folder), read_run(folder)
    assert origin(folder.files[0]) == first.origin
    assert run_id("tb", "p", first.key, first.origin) == run_id("tb", "p", ".", second.origin)
    assert run_id("tb", "p", ".", first.origin) != run_id("tb", "q", ".", first.origin)
    small = list(point_batches(first, "tb-x", limit=100))
    assert [items for _, items in small] == [100, 100, 40]  # acc first (names in order), split
    assert small == list(point_batches(second, "tb-x", limit=100))
    assert small != list(point_batches(second, "tb-y", limit=100))  # batch ids name the run


def test_a_corrupt_event_file_is_read_up_to_the_damage_and_reported(tmp_path: Path) -> None:
    with SummaryWriter(str(tmp_path)) as writer:
        for step in range(100):
            writer.add_scalar("x", float(step), step)
    (folder,) = find_runs(tmp_path)
    assert not read_run(folder).skipped  # a clean file is read to its end
    raw = bytearray(folder.files[0].read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    folder.files[0].write_bytes(bytes(raw))
    run = read_run(folder)
    assert 0 < run.points < 100
    assert run.points == len(run.scalars["x"]) and list(run.scalars["x"].steps) == list(
        range(run.points)
    )
    assert run.skipped == {"event files read only in part (corrupt, or still being written)": 1}
