"""The only place the tricks call private ``torch._foreach_*`` ops, each with a plain-loop fallback.

Foreach ops launch one fused kernel per (device, dtype) group instead of one per tensor. They are
private API, so every call goes through here; ``use_foreach(False)`` in tests checks that both
paths agree.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

_ENABLED = hasattr(torch, "_foreach_lerp_") and hasattr(torch, "_foreach_norm")


@contextmanager
def use_foreach(enabled: bool) -> Iterator[None]:
    """Force the foreach path on or off inside the block (tests compare both)."""
    global _ENABLED
    previous, _ENABLED = _ENABLED, enabled
    try:
        yield
    finally:
        _ENABLED = previous


def group_by_device_dtype(
    tensors: Sequence[torch.Tensor],
) -> dict[tuple[torch.device, torch.dtype], list[int]]:
    """Indices of ``tensors`` grouped by (device, dtype), in first-seen order."""
    groups: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault((t.device, t.dtype), []).append(i)
    return groups


def lerp_(
    targets: list[torch.Tensor], sources: list[torch.Tensor], weight: float | torch.Tensor
) -> None:
    """``targets[i] += weight * (sources[i] - targets[i])`` in place."""
    if not targets:
        return
    if _ENABLED:
        torch._foreach_lerp_(targets, sources, weight)
        return
    for t, s in zip(targets, sources, strict=True):
        t.lerp_(s, weight)


def copy_(targets: list[torch.Tensor], sources: list[torch.Tensor]) -> None:
    """``targets[i].copy_(sources[i])``."""
    if not targets:
        return
    if _ENABLED and hasattr(torch, "_foreach_copy_"):
        torch._foreach_copy_(targets, sources)
        return
    for t, s in zip(targets, sources, strict=True):
        t.copy_(s)


def sub(a: list[torch.Tensor], b: list[torch.Tensor]) -> list[torch.Tensor]:
    """``[a[i] - b[i]]``."""
    if _ENABLED:
        return list(torch._foreach_sub(a, b))
    return [x - y for x, y in zip(a, b, strict=True)]


def norm(tensors: list[torch.Tensor], ord: float = 2.0) -> list[torch.Tensor]:
    """Per-tensor vector norms as 0-d tensors."""
    if _ENABLED:
        return list(torch._foreach_norm(tensors, ord))
    return [torch.linalg.vector_norm(t, ord) for t in tensors]


def mul(tensors: list[torch.Tensor], factors: list[torch.Tensor]) -> list[torch.Tensor]:
    """``[tensors[i] * factors[i]]``; factors may be 0-d tensors (broadcast)."""
    if _ENABLED:
        return list(torch._foreach_mul(tensors, factors))
    return [t * f for t, f in zip(tensors, factors, strict=True)]


def mul_(tensors: list[torch.Tensor], factor: torch.Tensor) -> None:
    """``tensors[i] *= factor`` in place, ``factor`` a 0-d tensor on their device."""
    if _ENABLED:
        torch._foreach_mul_(tensors, factor)
        return
    for t in tensors:
        t.mul_(factor)


def pow_(tensors: list[torch.Tensor], exponent: torch.Tensor) -> None:
    """``tensors[i] **= exponent`` in place, ``exponent`` a 0-d tensor."""
    if _ENABLED:
        torch._foreach_pow_(tensors, [exponent] * len(tensors))
        return
    for t in tensors:
        t.pow_(exponent)


def below_fraction(tensors: list[torch.Tensor], thresholds: list[float]) -> list[torch.Tensor]:
    """Per tensor, the fraction of elements strictly below its threshold, as 0-d tensors.

    Built from ``sign``, ``clamp_max`` and an L1 norm so that it is one foreach pass per op
    instead of one comparison kernel per tensor: ``-sign(x - c)`` clamped at 0 is 1 exactly
    where ``x < c``, and its L1 norm counts those elements.
    """
    if not tensors:
        return []
    if _ENABLED:
        diff = list(torch._foreach_sub(tensors, thresholds))
        torch._foreach_sign_(diff)
        torch._foreach_clamp_max_(diff, 0.0)
        counts = torch._foreach_norm(diff, 1)
    else:
        counts = [(t < c).sum().to(t.dtype) for t, c in zip(tensors, thresholds, strict=True)]
    return [c / max(t.numel(), 1) for c, t in zip(counts, tensors, strict=True)]
