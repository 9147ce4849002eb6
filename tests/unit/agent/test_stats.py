"""Statistics against plain per-parameter torch expressions, fused and fallback paths alike."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from trickscope import _foreach, stats


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


def tensors(dtype: torch.dtype) -> list[Tensor]:
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


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_grad_stats_match_reference(dtype: torch.dtype, fused: bool) -> None:
    grads = tensors(dtype)
    block = stats.grad_stats(grads, stats.numels(grads), fused=fused)
    assert block.shape == (len(stats.GRAD_STATS), len(grads))
    assert block.dtype == torch.float32
    for column, g in enumerate(grads):
        assert_close(block[:, column].tolist(), reference_grad(g), f"{dtype} tensor {column}")


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_weight_stats_match_reference(dtype: torch.dtype, fused: bool) -> None:
    weights = [t for t in tensors(dtype) if torch.isfinite(t.float()).all()]
    block = stats.weight_stats(weights, stats.numels(weights), fused=fused)
    for column, w in enumerate(weights):
        assert_close(block[:, column].tolist(), reference_weight(w), f"{dtype} tensor {column}")


def test_update_ratio_is_relative_change_of_the_weights() -> None:
    torch.manual_seed(1)
    before = [torch.randn(10, 3), torch.randn(4)]
    after = [b + 1e-3 * torch.randn_like(b) for b in before]
    ratio = stats.update_ratio(after, before).tolist()
    for r, a, b in zip(ratio, after, before, strict=True):
        expected = (torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b)).item()
        assert r == pytest.approx(expected, rel=1e-5)


def test_foreach_fast_path_and_fallback_agree() -> None:
    assert _foreach.fused_available()
    xs = tensors(torch.float32)
    for ord in (0, 1, 2, math.inf):
        fused = torch.stack(_foreach.norm(xs, ord, fused=True))
        loop = torch.stack(_foreach.norm(xs, ord, fused=False))
        torch.testing.assert_close(fused, loop, equal_nan=True)
    pairs = [
        (_foreach.clamp_min(xs, 0.0, fused=True), _foreach.clamp_min(xs, 0.0, fused=False)),
        (_foreach.clamp_max(xs, 0.0, fused=True), _foreach.clamp_max(xs, 0.0, fused=False)),
        (_foreach.mul(xs, 0.0, fused=True), _foreach.mul(xs, 0.0, fused=False)),
        (_foreach.sub(xs, xs, fused=True), _foreach.sub(xs, xs, fused=False)),
    ]
    for fused_out, loop_out in pairs:
        for f, lo in zip(fused_out, loop_out, strict=True):
            torch.testing.assert_close(f, lo, equal_nan=True)
    dst_a = [torch.empty_like(x) for x in xs]
    dst_b = [torch.empty_like(x) for x in xs]
    _foreach.copy_(dst_a, xs, fused=True)
    _foreach.copy_(dst_b, xs, fused=False)
    for a, b, x in zip(dst_a, dst_b, xs, strict=True):
        torch.testing.assert_close(a, x, equal_nan=True)
        torch.testing.assert_close(b, x, equal_nan=True)


def test_total_norm_is_norm_of_all_gradients() -> None:
    grads = [torch.randn(5), torch.randn(2, 2)]
    norms = stats.grad_stats(grads, stats.numels(grads))[0]
    flat = torch.cat([g.reshape(-1) for g in grads])
    assert stats.total_norm(norms).item() == pytest.approx(torch.linalg.vector_norm(flat).item())


def test_stats_of_a_real_model_match_reference() -> None:
    torch.manual_seed(0)
    model = nn.TransformerEncoderLayer(d_model=16, nhead=2, dim_feedforward=32, batch_first=True)
    model(torch.randn(3, 5, 16)).pow(2).mean().backward()
    grads = [p.grad for p in model.parameters()]
    block = stats.grad_stats(grads, stats.numels(grads))  # type: ignore[arg-type]
    for column, g in enumerate(grads):
        assert g is not None
        assert_close(block[:, column].tolist(), reference_grad(g), f"param {column}")
