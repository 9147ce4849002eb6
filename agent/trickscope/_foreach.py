"""The only module that calls private ``torch._foreach_*`` APIs.

Each helper takes a list of same-device, same-dtype tensors and returns one result per tensor.
The fused path launches one multi-tensor kernel per call; the fallback is a plain per-tensor loop
kept for torch builds or devices without the fused op, and as the reference the tests hold the
fused path to.
"""

from __future__ import annotations

import torch
from torch import Tensor

_FUSED = all(
    hasattr(torch, name)
    for name in (
        "_foreach_norm",
        "_foreach_clamp_min",
        "_foreach_clamp_max",
        "_foreach_sub",
        "_foreach_mul",
        "_foreach_copy_",
    )
)


def fused_available() -> bool:
    """Whether this torch build has every fused op used here."""
    return _FUSED


def norm(
    tensors: list[Tensor], ord: float, *, dtype: torch.dtype | None = None, fused: bool = True
) -> list[Tensor]:
    """Vector norm of each tensor (``ord`` 0 counts non-zeros, ``inf`` is max |x|)."""
    if fused and _FUSED:
        return list(torch._foreach_norm(tensors, ord, dtype=dtype))
    return [torch.linalg.vector_norm(t, ord, dtype=dtype) for t in tensors]


def clamp_min(tensors: list[Tensor], low: float, *, fused: bool = True) -> list[Tensor]:
    """``max(x, low)`` per tensor; NaN stays NaN."""
    if fused and _FUSED:
        return list(torch._foreach_clamp_min(tensors, low))
    return [torch.clamp_min(t, low) for t in tensors]


def clamp_max(tensors: list[Tensor], high: float, *, fused: bool = True) -> list[Tensor]:
    """``min(x, high)`` per tensor; NaN stays NaN."""
    if fused and _FUSED:
        return list(torch._foreach_clamp_max(tensors, high))
    return [torch.clamp_max(t, high) for t in tensors]


def sub(a: list[Tensor], b: list[Tensor], *, fused: bool = True) -> list[Tensor]:
    """``a[i] - b[i]``; ``b[i]`` may be a 0-d tensor that broadcasts."""
    if fused and _FUSED:
        return list(torch._foreach_sub(a, b))
    return [x - y for x, y in zip(a, b, strict=True)]


def mul(tensors: list[Tensor], factor: float, *, fused: bool = True) -> list[Tensor]:
    """``x * factor`` per tensor."""
    if fused and _FUSED:
        return list(torch._foreach_mul(tensors, factor))
    return [t * factor for t in tensors]


def copy_(dst: list[Tensor], src: list[Tensor], *, fused: bool = True) -> None:
    """Copy ``src[i]`` into ``dst[i]`` in place."""
    if fused and _FUSED:
        torch._foreach_copy_(dst, src)
        return
    for d, s in zip(dst, src, strict=True):
        d.copy_(s)
