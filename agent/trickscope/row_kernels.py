"""A due step's statistics of a (device, dtype) group in two Triton launches per family (CUDA).

The row formulation (:mod:`trickscope.segments`, used on CUDA) gets a group's per-tensor
statistics from per-row partial results. As torch ops that is ~148 dispatched ops, ~102 of them
kernel launches, per due step whatever the model (``bench/host_ops.py``), a copy of the
gradients and of the weights into a float32 buffer, and about seven passes over the gradients; a
GPU training loop bound by the host's launches pays for each launch. Here:

- a row kernel reads each row of a tensor once, in place (the gradients and weights
  themselves, through a table of their addresses: no copy), and writes all the row's partial
  results: Σx², Σx, M2, and for gradients the non-zero, NaN and ±Inf counts and max |x|; for
  the update ratio, Σb² and Σ(b − a)² of the snapshot and the weights;
- a merge kernel gives each tensor one program that folds its rows into the final statistics.

Tensors that are not contiguous, or of a dtype the kernels do not read, are copied into the
float32 buffer first and read from there (:func:`readable` says which).

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

from trickscope.segments import ROW, RowLayout, to_device

logger = logging.getLogger("trickscope")

MOMENT_COLUMNS = ("sum_squares", "sum", "m2", "nonzero", "nan", "inf", "absmax")
PLAIN_COLUMNS = 3  # the first three: all that weights need
WARPS = 4  # 128 threads for a row of 1,024 elements
MERGE_BLOCK = 256  # rows a merge program reads at a time

_module: Any = None  # trickscope._triton_rows, imported on first use
_enabled = True  # use_kernels()
_failed = False  # a launch failed: off for the process
_devices: tuple[str, ...] = ("cuda",)
# Device tables of tensor addresses, by device and addresses: the parameters' never change, and
# the caching allocator mostly hands the gradients the same blocks step after step.
_tables: dict[tuple[torch.device, tuple[int, ...]], Tensor] = {}
TABLES = 16


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
    global _devices
    import triton  # type: ignore[import-untyped]

    if not triton.knobs.runtime.interpret:
        raise RuntimeError("interpreted() needs TRITON_INTERPRET=1 before Triton is imported")
    previous, _devices = _devices, ("cuda", "cpu")
    try:
        yield
    finally:
        _devices = previous


def readable(tensors: list[Tensor]) -> bool:
    """Whether the kernels can read ``tensors`` in place: contiguous, of a dtype they read."""
    module = _kernels()
    return (
        module is not None
        and tensors[0].dtype in module.DTYPES
        and all(t.is_contiguous() for t in tensors)
    )


def moment_rows(tensors: list[Tensor], rows: RowLayout, *, counts: bool) -> Tensor | None:
    """Per row of ``tensors`` laid out as ``rows`` (:func:`readable` ones, or a buffer's views):
    the columns of :data:`MOMENT_COLUMNS` (the first :data:`PLAIN_COLUMNS` without ``counts``),
    float64. M2 is taken over each row's own elements."""
    device = tensors[0].device
    if not usable(device):
        return None
    columns = len(MOMENT_COLUMNS) if counts else PLAIN_COLUMNS
    out = torch.empty(rows.elements // ROW, columns, dtype=torch.float64, device=device)
    launched = _launch(
        "moment_rows",
        out.shape[0],
        tensors,
        *_placing(rows),
        out,
        COUNTS=counts,
        COLUMNS=columns,
        ROW=ROW,
    )
    return out if launched else None


def grad_stats(tensors: list[Tensor], rows: RowLayout) -> Tensor | None:
    """``trickscope.stats.GRAD_STATS`` of ``tensors`` (laid out as ``rows``, whose sizes give
    the element counts): float32, one row per statistic."""
    return _moments(tensors, rows, counts=True)


def weight_stats(tensors: list[Tensor], rows: RowLayout) -> Tensor | None:
    """``trickscope.stats.WEIGHT_STATS`` of ``tensors``, likewise."""
    return _moments(tensors, rows, counts=False)


def _moments(tensors: list[Tensor], rows: RowLayout, *, counts: bool) -> Tensor | None:
    per_row = moment_rows(tensors, rows, counts=counts)
    if per_row is None:
        return None
    # As many statistics as row columns: GRAD_STATS' 7 with counts, WEIGHT_STATS' 3 without.
    out = torch.empty(per_row.shape[1], len(tensors), device=per_row.device)
    launched = _launch(
        "merge_moments",
        len(tensors),
        per_row,
        rows.offsets,
        rows.sizes,
        out,
        len(tensors),
        COUNTS=counts,
        COLUMNS=per_row.shape[1],
        BLOCK=MERGE_BLOCK,
        ROW=ROW,
    )
    return out if launched else None


def update_rows(before: Tensor, after: list[Tensor], rows: RowLayout) -> Tensor | None:
    """Per row: Σb² and Σ(b − a)² of the ``(rows, ROW)`` float32 snapshot ``before`` and the
    tensors ``after`` in its layout, float64, shape ``(rows, 2)``."""
    if not usable(before.device):
        return None
    out = torch.empty(before.shape[0], 2, dtype=torch.float64, device=before.device)
    launched = _launch(
        "update_rows",
        before.shape[0],
        before,
        after,
        *_placing(rows),
        out,
        ROW=ROW,
    )
    return out if launched else None


def update_ratio(before: Tensor, after: list[Tensor], rows: RowLayout) -> Tensor | None:
    """``‖before − after‖ / ‖before‖`` per tensor, float32: the snapshot ``before`` as in
    :func:`update_rows`."""
    per_row = update_rows(before, after, rows)
    if per_row is None:
        return None
    out = torch.empty(len(after), device=before.device)
    launched = _launch("merge_update", len(after), per_row, rows.offsets, out, BLOCK=MERGE_BLOCK)
    return out if launched else None


def _placing(rows: RowLayout) -> tuple[Tensor, Tensor, int, int]:
    """What a row kernel needs to place its row: the per-tensor offsets and sizes, the number
    of tensors and of halvings that find a row's tensor among them."""
    return rows.offsets, rows.sizes, rows.tensors, rows.tensors.bit_length()


def _kernels() -> Any:
    """The kernels' module, or ``None`` where Triton does not import (then off for good)."""
    global _module, _failed
    if _module is None and not _failed:
        try:
            from trickscope import _triton_rows

            _module = _triton_rows
        except ImportError:  # no Triton here (e.g. Windows): the torch ops are the path
            _failed = True
    return _module


def _table(tensors: list[Tensor]) -> Tensor:
    """The tensors' addresses as an int64 tensor on their device (cached; built without a
    sync, through pinned memory)."""
    device = tensors[0].device
    key = (device, tuple(t.data_ptr() for t in tensors))
    table = _tables.get(key)
    if table is None:
        if len(_tables) >= TABLES:
            del _tables[next(iter(_tables))]  # the oldest
        table = _tables[key] = to_device(torch.tensor(key[1], dtype=torch.int64), device)
    return table


def _launch(name: str, programs: int, *args: Any, **constants: Any) -> bool:
    """Launch ``programs`` programs of kernel ``name``; a list of tensors among ``args`` goes
    as their address table (and sets ``DTYPE``). ``False``, and the kernels off from now on, on
    failure."""
    global _failed
    module = _kernels()
    if module is None:
        return False
    try:
        device = args[0].device if isinstance(args[0], Tensor) else args[0][0].device
        arguments = []
        for arg in args:
            if isinstance(arg, list):
                constants["DTYPE"] = module.DTYPES[arg[0].dtype]
                arg = _table(arg)
            arguments.append(arg)
        # Triton launches on the current device: make it the tensors'.
        with torch.cuda.device(device) if device.type == "cuda" else nullcontext():
            getattr(module, name)[(programs,)](*arguments, **constants, num_warps=WARPS)
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
