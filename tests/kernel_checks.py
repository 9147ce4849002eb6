"""Checks of the fused row kernels that run on any device they run on: on CPU in Triton's
interpreter (``tests/unit/agent/interpreted_kernels.py``) and on CUDA compiled (``tests/gpu``).
Each call runs the kernels and the torch ops on the same buffers and compares them."""

from __future__ import annotations

import torch
from torch import Tensor

from tests.stats_reference import boundary_tensors, extreme_tensors
from trickscope import row_kernels, stats
from trickscope.segments import ROW


def row_columns(tensors: list[Tensor], *, counts: bool, kernel: bool) -> Tensor:
    """The per-row partial results of ``tensors``, by the kernel (reading them in place) or by
    the torch ops (from the float32 buffer)."""
    buf = stats.Scratch(tensors)
    if kernel:
        fused = row_kernels.moment_rows(tensors, buf.rows, counts=counts)
        assert fused is not None, "the row kernel did not run"
        # The same rows when the kernel reads the buffer's float32 views instead.
        views = row_kernels.moment_rows(buf.load(tensors, fused=True), buf.rows, counts=counts)
        if tensors[0].dtype == torch.float32:
            torch.testing.assert_close(views, fused, equal_nan=True, rtol=0, atol=0)
        return fused
    buf.load(tensors, fused=True)
    return stats._row_moments(buf, counts=counts)


def check_moment_rows(device: torch.device, *, counts: bool) -> None:
    """Every padding case and special value: the kernel's rows equal the torch ops' rows."""
    xs = [x.to(device) for x in boundary_tensors()]
    fused = row_columns(xs, counts=counts, kernel=True)
    ops = row_columns(xs, counts=counts, kernel=False)
    assert fused.shape == ops.shape == (fused.shape[0], 7 if counts else 3)
    assert fused.dtype == torch.float64
    # An empty tensor's row has sum 0 from the kernel, NaN from the ops (0 · NaN mean): both
    # give the tensor a NaN mean. Every other row agrees.
    empty = stats.Scratch(xs).rows.starts[1] // ROW
    keep = torch.arange(fused.shape[0], device=device) != empty
    torch.testing.assert_close(fused[keep], ops[keep], equal_nan=True, rtol=1e-6, atol=1e-9)


def check_extreme_rows(device: torch.device) -> None:
    """The kernel accumulates in float64; the torch ops' row variance is float32 (it gives Inf
    and 0 here): each row's Σx², Σx and M2 against float64 arithmetic."""
    xs = extreme_tensors()
    fused = row_columns([x.to(device) for x in xs], counts=True, kernel=True)
    expected = []
    for x in xs:
        for part in x.double().split(ROW):
            expected.append([part.square().sum(), part.sum(), (part - part.mean()).square().sum()])
    torch.testing.assert_close(fused[:, :3].cpu(), torch.tensor(expected, dtype=torch.float64))


def check_update_rows(device: torch.device) -> None:
    """Σb² and Σ(b − a)² per row, against the torch ops."""
    xs = [x.to(device) for x in boundary_tensors() if x.isfinite().all()]
    after = [x + 1e-3 * torch.randn(x.shape, device=device) for x in xs]
    before = stats.Scratch(xs)
    before.load(xs, fused=True)
    now = stats.Scratch(after)
    now.load(after, fused=True)
    fused = row_kernels.update_rows(before.matrix, after, before.rows)
    assert fused is not None, "the update kernel did not run"
    squares = stats._row_squares(before.matrix)
    change = stats._row_squares(before.matrix - now.matrix)
    torch.testing.assert_close(fused, torch.stack([squares, change], 1), rtol=1e-6, atol=1e-30)
