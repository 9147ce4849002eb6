"""The only module that calls private ``torch._foreach_*`` APIs (the agent's and the tricks').

Each helper takes a list of same-device, same-dtype tensors and returns one result per tensor.
The fused path launches one multi-tensor kernel per call; the fallback is a plain per-tensor loop
kept for torch builds or devices without the fused op, and as the reference the tests hold the
fused path to. ``use_foreach(False)`` forces the fallback everywhere (the tricks' tests compare
both paths); the statistics also take an explicit ``fused`` flag.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

_FUSED = all(
    hasattr(torch, name)
    for name in (
        "_foreach_norm",
        "_foreach_sub",
        "_foreach_sub_",
        "_foreach_mul",
        "_foreach_mul_",
        "_foreach_pow_",
        "_foreach_lerp_",
        "_foreach_sign_",
        "_foreach_clamp_max_",
        "_foreach_copy_",
    )
)
_enabled = _FUSED


def fused_available() -> bool:
    """Whether this torch build has every fused op used here."""
    return _FUSED


@contextmanager
def use_foreach(enabled: bool) -> Iterator[None]:
    """Force the fused path on (where available) or off inside the block."""
    global _enabled
    previous, _enabled = _enabled, enabled and _FUSED
    try:
        yield
    finally:
        _enabled = previous


def _on(fused: bool) -> bool:
    return fused and _enabled


def _segmented(device: torch.device) -> bool:
    """Whether to use the whole-buffer (segmented) formulation rather than a per-tensor loop.

    On CUDA a per-tensor loop would launch one kernel per parameter; on CPU the loop is what a
    foreach op does anyway, and it is faster there. Tests force either on CPU.
    """
    return device.type == "cuda"


def segmented(device: torch.device) -> bool:
    """Whether statistics on ``device`` take the whole-buffer (segmented) formulation."""
    return _segmented(device)


def group_by_device_dtype(
    tensors: list[Tensor],
) -> dict[tuple[torch.device, torch.dtype], list[int]]:
    """Indices of ``tensors`` grouped by (device, dtype), in first-seen order."""
    groups: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault((t.device, t.dtype), []).append(i)
    return groups


def norm(
    tensors: list[Tensor], ord: float = 2.0, *, dtype: torch.dtype | None = None, fused: bool = True
) -> list[Tensor]:
    """Vector norm of each tensor, 0-d (``ord`` 0 counts non-zeros, ``inf`` is max |x|)."""
    if not tensors:
        return []
    if _on(fused):
        return list(torch._foreach_norm(tensors, ord, dtype=dtype))
    return [torch.linalg.vector_norm(t, ord, dtype=dtype) for t in tensors]


def sub(a: list[Tensor], b: list[Tensor], *, fused: bool = True) -> list[Tensor]:
    """``a[i] - b[i]``; ``b[i]`` may be a 0-d tensor that broadcasts."""
    if _on(fused):
        return list(torch._foreach_sub(a, b))
    return [x - y for x, y in zip(a, b, strict=True)]


def sub_(a: list[Tensor], b: list[Tensor], *, fused: bool = True) -> None:
    """``a[i] -= b[i]`` in place (same shapes: the fused kernel's fast path)."""
    if _on(fused):
        torch._foreach_sub_(a, b)
        return
    for x, y in zip(a, b, strict=True):
        x.sub_(y)


def mul(
    tensors: list[Tensor], factors: float | list[Tensor], *, fused: bool = True
) -> list[Tensor]:
    """``tensors[i] * factor`` (one number) or ``tensors[i] * factors[i]`` (0-d tensors)."""
    if _on(fused):
        return list(torch._foreach_mul(tensors, factors))
    if isinstance(factors, list):
        return [t * f for t, f in zip(tensors, factors, strict=True)]
    return [t * factors for t in tensors]


def mul_(tensors: list[Tensor], factor: Tensor, *, fused: bool = True) -> None:
    """``tensors[i] *= factor`` in place, ``factor`` a 0-d tensor on their device."""
    if _on(fused):
        torch._foreach_mul_(tensors, factor)
        return
    for t in tensors:
        t.mul_(factor)


def pow_(tensors: list[Tensor], exponent: Tensor, *, fused: bool = True) -> None:
    """``tensors[i] **= exponent`` in place, ``exponent`` a 0-d tensor."""
    if _on(fused):
        torch._foreach_pow_(tensors, [exponent] * len(tensors))
        return
    for t in tensors:
        t.pow_(exponent)


def lerp_(targets: list[Tensor], sources: list[Tensor], weight: float | Tensor) -> None:
    """``targets[i] += weight * (sources[i] - targets[i])`` in place."""
    if not targets:
        return
    if _on(True):
        torch._foreach_lerp_(targets, sources, weight)
        return
    for t, s in zip(targets, sources, strict=True):
        t.lerp_(s, weight)


def copy_(dst: list[Tensor], src: list[Tensor], *, fused: bool = True) -> None:
    """Copy ``src[i]`` into ``dst[i]`` in place (casting to ``dst``'s dtype)."""
    if not dst:
        return
    if _on(fused):
        torch._foreach_copy_(dst, src)
        return
    for d, s in zip(dst, src, strict=True):
        d.copy_(s)


def below_fraction(tensors: list[Tensor], thresholds: list[float]) -> list[Tensor]:
    """Per tensor, the fraction of elements strictly below its threshold, as 0-d tensors."""
    counts = count_below(tensors, thresholds)
    return [c / max(t.numel(), 1) for c, t in zip(counts, tensors, strict=True)]


def count_below(tensors: list[Tensor], thresholds: list[float]) -> list[Tensor]:
    """Per tensor, the number of elements strictly below its threshold, as 0-d tensors.

    Built from ``sign``, ``clamp_max`` and an L1 norm so that it is one foreach pass per op
    instead of one comparison kernel per tensor: ``-sign(x - c)`` clamped at 0 is 1 exactly
    where ``x < c``, and its L1 norm counts those elements. The difference is a temporary the
    size of ``tensors``: callers bound it with :func:`pieces`.
    """
    if not tensors:
        return []
    if _on(True):
        diff = list(torch._foreach_sub(tensors, thresholds))
        torch._foreach_sign_(diff)
        torch._foreach_clamp_max_(diff, 0.0)
        return list(torch._foreach_norm(diff, 1))
    return [(t < c).sum().to(t.dtype) for t, c in zip(tensors, thresholds, strict=True)]


# Elements a chunk of :func:`pieces` holds at most (16 MiB of float32): what a pass that makes
# temporaries the size of its inputs adds to the agent's memory at most.
PIECE_ELEMENTS = 1 << 22


def pieces(
    tensors: list[Tensor], limit: int = PIECE_ELEMENTS
) -> Iterator[tuple[list[int], list[Tensor]]]:
    """``tensors`` in chunks of at most ``limit`` elements: per chunk, the index of the tensor
    each piece comes from and the pieces, flat views (a contiguous tensor larger than ``limit``
    is cut into several; a non-contiguous one goes whole, in a chunk of its own). Sums over a
    tensor's pieces give its sums: foreach passes over the chunks allocate temporaries of one
    chunk at a time, not of the whole model."""
    owners: list[int] = []
    chunk: list[Tensor] = []
    total = 0
    for index, tensor in enumerate(tensors):
        if tensor.is_contiguous():
            flat = tensor.reshape(-1)
            parts = list(flat.split(limit)) if flat.numel() > limit else [flat]
        else:
            parts = [tensor]
        for part in parts:
            if chunk and total + part.numel() > limit:
                yield owners, chunk
                owners, chunk, total = [], [], 0
            owners.append(index)
            chunk.append(part)
            total += part.numel()
    if chunk:
        yield owners, chunk
