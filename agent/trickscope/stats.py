"""Per-layer statistics, computed as device ops with one fused call per statistic.

Every function takes tensors of one (device, dtype) group and returns float32 results, one column
per tensor, without reading a value back to the host. Half-precision inputs are upcast once (one
``cat``) so that sums, norms and differences are taken in float32.

Definitions match the obvious per-tensor torch expressions, which the tests use as reference:
``grad_norm`` = ``vector_norm(g)``, ``grad_max`` = ``g.abs().max()``, ``grad_mean`` = ``g.mean()``,
``grad_std`` = ``g.std()`` (unbiased), ``grad_zero_frac`` = ``(g == 0).float().mean()``,
``grad_nan`` = ``g.isnan().sum()``, ``grad_inf`` = ``g.isinf().sum()``, and likewise for weights;
``update_ratio`` = ``‖w_after − w_before‖ / ‖w_before‖``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from trickscope import _foreach

GRAD_STATS = (
    "grad_norm",
    "grad_max",
    "grad_mean",
    "grad_std",
    "grad_zero_frac",
    "grad_nan",
    "grad_inf",
)
WEIGHT_STATS = ("weight_norm", "weight_mean", "weight_std")
UPDATE_STAT = "update_ratio"
TOTAL_GRAD_NORM = "grad_norm/total"

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def upcast(tensors: list[Tensor]) -> list[Tensor]:
    """Detached float32 (or float64) versions; half types are cast once, through a flat copy."""
    if tensors[0].dtype not in _LOW_PRECISION:
        return [t.detach() for t in tensors]
    flat = torch.cat([t.detach().reshape(-1) for t in tensors]).to(torch.float32)
    return list(flat.split([t.numel() for t in tensors]))


def numels(tensors: list[Tensor]) -> Tensor:
    """Element counts as a float32 tensor on the tensors' device (built once per layout).

    The host→device copy goes through pinned memory so that it does not block on CUDA.
    """
    counts = torch.tensor([float(t.numel()) for t in tensors], dtype=torch.float32)
    device = tensors[0].device
    if device.type == "cuda":
        return counts.pin_memory().to(device, non_blocking=True)
    return counts.to(device)


def _moments(x: list[Tensor], n: Tensor, fused: bool) -> tuple[Tensor, Tensor, Tensor]:
    """L2 norm, mean and unbiased std of each tensor, all in float32."""
    l2 = torch.stack(_foreach.norm(x, 2, fused=fused)).to(torch.float32)
    # No foreach sum exists: a signed sum is the L1 norm of the positive part minus that of the
    # negative part (NaN and ±Inf propagate just as in ``sum``).
    pos = torch.stack(_foreach.norm(_foreach.clamp_min(x, 0.0, fused=fused), 1, fused=fused))
    neg = torch.stack(_foreach.norm(_foreach.clamp_max(x, 0.0, fused=fused), 1, fused=fused))
    mean_x = (pos - neg) / n.to(pos.dtype)
    # Two-pass std: subtracting the mean first avoids the cancellation of E[x²] − E[x]² on
    # tensors such as BatchNorm weights (all ones, std 0).
    centered = _foreach.sub(x, list(mean_x.unbind()), fused=fused)
    spread = torch.stack(_foreach.norm(centered, 2, fused=fused)).to(torch.float32)
    std = spread / (n - 1.0).sqrt()
    return l2, mean_x.to(torch.float32), std


def grad_stats(grads: list[Tensor], n: Tensor, *, fused: bool = True) -> Tensor:
    """Statistics of :data:`GRAD_STATS`, shape ``(len(GRAD_STATS), len(grads))``, float32.

    Args:
        grads: Gradients of one (device, dtype) group.
        n: Their element counts, from :func:`numels`.
        fused: Use the fused foreach kernels (``False``: the per-tensor reference loop).
    """
    x = upcast(grads)
    l2, mean, std = _moments(x, n, fused)
    absmax = torch.stack(_foreach.norm(x, math.inf, fused=fused)).to(torch.float32)
    nonzero = torch.stack(_foreach.norm(x, 0, fused=fused)).to(torch.float32)
    # x * 0 is 0 for finite x and NaN for NaN and ±Inf; clamping first maps ±Inf to ±1, so the
    # second count sees NaN alone. L0 "norms" count the NaNs.
    nonfinite = torch.stack(_foreach.norm(_foreach.mul(x, 0.0, fused=fused), 0, fused=fused))
    clamped = _foreach.clamp_max(_foreach.clamp_min(x, -1.0, fused=fused), 1.0, fused=fused)
    nan = torch.stack(_foreach.norm(_foreach.mul(clamped, 0.0, fused=fused), 0, fused=fused))
    nan = nan.to(torch.float32)
    inf = nonfinite.to(torch.float32) - nan
    zero_frac = (n - nonzero) / n
    return torch.stack([l2, absmax, mean, std, zero_frac, nan, inf])


def weight_stats(weights: list[Tensor], n: Tensor, *, fused: bool = True) -> Tensor:
    """Statistics of :data:`WEIGHT_STATS`, shape ``(len(WEIGHT_STATS), len(weights))``."""
    l2, mean, std = _moments(upcast(weights), n, fused)
    return torch.stack([l2, mean, std])


def update_ratio(after: list[Tensor], before: list[Tensor], *, fused: bool = True) -> Tensor:
    """‖after − before‖ / ‖before‖ per tensor, float32, shape ``(len(after),)``."""
    new, old = upcast(after), upcast(before)
    delta = torch.stack(_foreach.norm(_foreach.sub(new, old, fused=fused), 2, fused=fused))
    scale = torch.stack(_foreach.norm(old, 2, fused=fused))
    return (delta / scale).to(torch.float32)


def total_norm(norms: Tensor) -> Tensor:
    """The global gradient L2 norm from per-tensor L2 norms, as a 1-element tensor."""
    return torch.linalg.vector_norm(norms).reshape(1)
