"""A due step's statistics of a row-aligned buffer in two Triton launches per family (CUDA).

The row formulation (:mod:`trickscope.segments`, used on CUDA) gets a group's per-tensor
statistics from per-row partial results. As torch ops that is ~148 dispatched ops, ~102 of them
kernel launches, per due step whatever the model (``bench/host_ops.py``), and about seven passes
over the gradients; a GPU training loop bound by the host's launches pays for each launch. Here:

- a row kernel reads each row once and writes all its partial results (:func:`moment_rows`:
  Σx², Σx, M2, and for gradients the non-zero, NaN and ±Inf counts and max |x|; for the update
  ratio, Σb² and Σ(b − a)² of the snapshot and the weights);
- a merge kernel gives each tensor one program that folds its rows into the final statistics.

:func:`grad_stats`, :func:`weight_stats` and :func:`update_ratio` return ``None`` where the
kernels do not run, and the caller's torch ops do the work: off CUDA, without Triton, inside
``use_kernels(False)``, or once a launch has failed (no C compiler for Triton's launcher, a
device it does not support): that failure is logged once and keeps the kernels off for the
process. The kernels themselves are in :mod:`trickscope._triton_rows`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import Tensor

from trickscope.segments import ROW, RowLayout

logger = logging.getLogger("trickscope")

MOMENT_COLUMNS = ("sum_squares", "sum", "m2", "nonzero", "nan", "inf", "absmax")
PLAIN_COLUMNS = 3  # the first three: all that weights need
WARPS = 4  # 128 threads for a row of 1,024 elements
MERGE_BLOCK = 256  # rows a merge program reads at a time

_kernels: dict[str, Any] | None = None  # compiled on first use
_enabled = True  # use_kernels()
_failed = False  # a launch failed: off for the process
_devices: tuple[str, ...] = ("cuda",)


def usable(device: torch.device) -> bool:
    """Whether the kernels may run on ``device`` (they may still fail on first launch)."""
    return _enabled and not _failed and device.type in _devices


@contextmanager
def use_kernels(enabled: bool) -> Iterator[None]:
    """Allow the kernels (where they are usable) or keep them off inside the block."""
    global _enabled
    previous, _enabled = _enabled, enabled
    try:
        yield
    finally:
        _enabled = previous


@contextmanager
def interpreted() -> Iterator[None]:
    """Run the kernels in Triton's interpreter on host tensors inside the block: how the test
    suite holds them to the torch formulation on a machine without a GPU. The process must
    have started with ``TRITON_INTERPRET=1`` (Triton reads it when it is imported)."""
    global _kernels, _devices
    import triton  # type: ignore[import-untyped]

    from trickscope import _triton_rows

    if not triton.knobs.runtime.interpret:
        raise RuntimeError("interpreted() needs TRITON_INTERPRET=1 before Triton is imported")
    previous = _kernels, _devices
    _kernels, _devices = _triton_rows.jit(), ("cuda", "cpu")
    try:
        yield
    finally:
        _kernels, _devices = previous


def moment_rows(matrix: Tensor, valid: Tensor, *, counts: bool) -> Tensor | None:
    """Per row of the ``(rows, ROW)`` float32 buffer: the columns of :data:`MOMENT_COLUMNS`
    (the first :data:`PLAIN_COLUMNS` without ``counts``), float64. ``valid`` (int32) holds how
    many of each row's elements belong to its tensor; M2 is taken over those alone."""
    if not usable(matrix.device):
        return None
    columns = len(MOMENT_COLUMNS) if counts else PLAIN_COLUMNS
    out = torch.empty(matrix.shape[0], columns, dtype=torch.float64, device=matrix.device)
    launched = _launch(
        "moment_rows", matrix.shape[0], matrix, valid, out, COUNTS=counts, COLUMNS=columns, ROW=ROW
    )
    return out if launched else None


def grad_stats(matrix: Tensor, rows: RowLayout, n: Tensor) -> Tensor | None:
    """``trickscope.stats.GRAD_STATS`` of the tensors loaded in ``matrix`` (laid out as
    ``rows``, ``n`` their element counts): float32, one row per statistic."""
    return _moments(matrix, rows, n, counts=True)


def weight_stats(matrix: Tensor, rows: RowLayout, n: Tensor) -> Tensor | None:
    """``trickscope.stats.WEIGHT_STATS`` of the tensors loaded in ``matrix``, likewise."""
    return _moments(matrix, rows, n, counts=False)


def _moments(matrix: Tensor, rows: RowLayout, n: Tensor, *, counts: bool) -> Tensor | None:
    per_row = moment_rows(matrix, rows.row_valid, counts=counts)
    if per_row is None:
        return None
    tensors = n.shape[0]
    out = torch.empty(per_row.shape[1] if counts else 3, tensors, device=matrix.device)
    launched = _launch(
        "merge_moments",
        tensors,
        per_row,
        rows.offsets,
        rows.row_counts,
        n,
        out,
        tensors,
        COUNTS=counts,
        COLUMNS=per_row.shape[1],
        BLOCK=MERGE_BLOCK,
    )
    return out if launched else None


def update_rows(before: Tensor, after: Tensor) -> Tensor | None:
    """Per row of two ``(rows, ROW)`` float32 buffers in one layout: Σb² and Σ(b − a)²,
    float64, shape ``(rows, 2)``."""
    if not usable(before.device):
        return None
    out = torch.empty(before.shape[0], 2, dtype=torch.float64, device=before.device)
    return out if _launch("update_rows", before.shape[0], before, after, out, ROW=ROW) else None


def update_ratio(before: Tensor, after: Tensor, rows: RowLayout) -> Tensor | None:
    """``‖before − after‖ / ‖before‖`` per tensor of two buffers laid out as ``rows``,
    float32."""
    per_row = update_rows(before, after)
    if per_row is None:
        return None
    tensors = rows.offsets.shape[0] - 1
    out = torch.empty(tensors, device=before.device)
    launched = _launch("merge_update", tensors, per_row, rows.offsets, out, BLOCK=MERGE_BLOCK)
    return out if launched else None


def _launch(name: str, programs: int, first: Tensor, *args: Any, **constants: Any) -> bool:
    """Launch ``programs`` programs of kernel ``name`` on ``first``'s device; ``False`` (and
    the kernels off from now on) on failure."""
    global _kernels, _failed
    try:
        if _kernels is None:
            from trickscope import _triton_rows

            _kernels = _triton_rows.jit()
        # Triton launches on the current device: make it the buffer's.
        device = first.device
        with torch.cuda.device(device) if device.type == "cuda" else nullcontext():
            _kernels[name][(programs,)](first, *args, **constants, num_warps=WARPS)
    except ImportError:
        _failed = True  # no Triton here (e.g. Windows): the torch ops are the path
        return False
    except Exception as exc:
        _failed = True
        logger.warning(
            "trickscope: the fused statistics kernel %s failed (%s: %s); using torch ops from "
            "now on",
            name,
            type(exc).__name__,
            exc,
        )
        return False
    return True
