"""Plain per-parameter torch expressions that the agent's statistics are held to (CPU and CUDA)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from trickscope.segments import ROW


def reference_grad(g: Tensor) -> list[float]:
    g = g.detach().float()
    return [
        torch.linalg.vector_norm(g).item(),
        g.abs().max().item(),
        g.mean().item(),
        g.std().item() if g.numel() > 1 else math.nan,
        (g == 0).float().mean().item(),
        g.isnan().sum().item(),
        g.isinf().sum().item(),
    ]


def reference_weight(w: Tensor) -> list[float]:
    w = w.detach().float()
    return [
        torch.linalg.vector_norm(w).item(),
        w.mean().item(),
        w.std().item() if w.numel() > 1 else math.nan,
    ]


def assert_close(actual: list[float], expected: list[float], what: str) -> None:
    for a, e in zip(actual, expected, strict=True):
        if math.isnan(e):
            assert math.isnan(a), what
        else:
            assert a == pytest.approx(e, rel=1e-4, abs=1e-6), what


def special_tensors(dtype: torch.dtype) -> list[Tensor]:
    torch.manual_seed(0)
    specials = torch.randn(5, 7)
    specials[0, 0] = math.nan
    specials[1, 1] = math.inf
    specials[2, 2] = -math.inf
    specials[3, :] = 0.0
    infs = torch.tensor([math.inf, 1.0, 0.0, -2.0])
    ones = torch.ones(16)  # std 0: the naive one-pass formula gets this wrong
    return [
        t.to(dtype)
        for t in (
            torch.randn(3, 4) * 1e-3,
            specials,
            infs,
            ones,
            torch.tensor([2.5]),
            torch.randn(64),
        )
    ]


def boundary_tensors() -> list[Tensor]:
    """Every padding case (0, 1, ROW − 1, ROW, ROW + 1 elements, several rows) and the values
    that break naive formulas (NaN, ±Inf, zeros, a mean that dominates the spread)."""
    torch.manual_seed(0)
    row = ROW
    with_nan = torch.randn(row - 1)
    with_nan[5] = math.nan
    with_inf = torch.randn(row + 1)
    with_inf[row] = -math.inf
    return [
        torch.randn(3),
        torch.zeros(0),
        with_nan,
        torch.randn(row),
        with_inf,
        torch.tensor([2.5]),
        1.0 + 1e-4 * torch.randn(3000),  # a LayerNorm weight: the mean dominates
        torch.zeros(2 * row + 7),
    ]


def extreme_tensors() -> list[Tensor]:
    """Magnitudes whose squares leave float32's range, over several rows."""
    torch.manual_seed(1)
    return [1e30 * torch.randn(1500), 1e-30 * torch.randn(1500)]


def reference_histogram(t: Tensor, bins: int) -> tuple[float, float, float, list[float]]:
    """Per-tensor torch.histc over the finite values, edges widened as histc does."""
    x = t.detach().float().reshape(-1)
    finite = x[x.isfinite()]
    if finite.numel():
        lo, hi = finite.min().item(), finite.max().item()
    else:
        lo = hi = 0.0
    if lo == hi:
        lo, hi = lo - 1.0, hi + 1.0
    counts = torch.histc(finite, bins, min=lo, max=hi) if finite.numel() else torch.zeros(bins)
    return lo, hi, float(x.numel() - finite.numel()), counts.tolist()


def small_models() -> list[nn.Module]:
    torch.manual_seed(0)
    conv = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 36, 4)
    )
    transformer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
    embedding = nn.Sequential(nn.Embedding(50, 8), nn.LayerNorm(8), nn.Linear(8, 3))
    conv(torch.randn(2, 3, 8, 8)).pow(2).mean().backward()
    transformer(torch.randn(3, 5, 16)).pow(2).mean().backward()
    embedding(torch.randint(0, 50, (4, 6))).pow(2).mean().backward()
    return [conv, transformer, embedding]


def assert_grad_block(block: Tensor, grads: list[Tensor], what: str = "grad") -> None:
    """Each column of a :func:`trickscope.stats.grad_stats` block against the reference."""
    for column, g in enumerate(grads):
        assert_close(block[:, column].tolist(), reference_grad(g.cpu()), f"{what} {column}")


def assert_weight_block(block: Tensor, weights: list[Tensor], what: str = "weight") -> None:
    """Each column of a :func:`trickscope.stats.weight_stats` block against the reference."""
    for column, w in enumerate(weights):
        assert_close(block[:, column].tolist(), reference_weight(w.cpu()), f"{what} {column}")


def assert_histograms(rows: Tensor, tensors: list[Tensor], bins: int) -> None:
    """Each row of :func:`trickscope.stats.histograms` equals ``torch.histc``'s."""
    for row, t in zip(rows.cpu().tolist(), tensors, strict=True):
        lo, hi, nonfinite, counts = reference_histogram(t.cpu(), bins)
        assert row == [lo, hi, nonfinite, *counts]


def watched_reports(model: nn.Module, input_shape: tuple[int, ...], steps: int = 3) -> list:
    """What a watcher with every statistic due emits over ``steps`` AdamW steps on seeded
    random inputs (the statistics' formulation is the caller's to set)."""
    from trickscope._incidents import Incidents
    from trickscope.watch import Watcher

    torch.manual_seed(0)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    seen: list[list[float]] = []
    watcher = Watcher(
        model,
        optimizer,
        every=1,
        start_step=0,
        emit=lambda step, keys, values, host: seen.append(values.tolist()),
        incidents=Incidents(),
    )
    for _ in range(steps):
        optimizer.zero_grad()
        model(torch.randn(input_shape)).pow(2).mean().backward()
        optimizer.step()
    watcher.close()
    return seen
