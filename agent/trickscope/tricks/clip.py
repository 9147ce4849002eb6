"""Gradient clipping by global norm or by value, reporting what it did without a host sync.

Global-norm clipping: Pascanu et al. 2013, https://arxiv.org/abs/1211.5063.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

import torch
from torch.nn.utils import clip_grad_value_, clip_grads_with_norm_, get_total_norm

from trickscope import _foreach
from trickscope.tricks._sink import Metric, MetricSink, report

NonFinite = Literal["skip", "raise", "ignore"]
_EPS = 1e-6  # torch.nn.utils.clip_grad_norm_ adds the same constant


def _grads(parameters: torch.Tensor | Iterable[torch.Tensor]) -> list[torch.Tensor]:
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    return [p.grad for p in parameters if p.grad is not None]


def _coef(total_norm: torch.Tensor, max_norm: float) -> torch.Tensor:
    return (max_norm / (total_norm + _EPS)).clamp(max=1.0)


def clip_grad_norm(
    parameters: torch.Tensor | Iterable[torch.Tensor],
    max_norm: float,
    *,
    norm_type: float = 2.0,
    nonfinite: NonFinite = "skip",
    foreach: bool | None = None,
    run: MetricSink | None = None,
    step: int | None = None,
) -> torch.Tensor:
    """Clip gradients to a global norm like ``torch.nn.utils.clip_grad_norm_``, and report it.

    Gradients are scaled by ``min(1, max_norm / (total_norm + 1e-6))``, a clamp on the device
    with no branch. Reports ``clip/pre_norm``, ``clip/post_norm``, ``clip/coef``,
    ``clip/threshold`` and ``clip/clipped`` (1 or 0) as 0-d tensors. Pascanu et al. 2013,
    https://arxiv.org/abs/1211.5063.

    Args:
        parameters: Parameters (or one tensor) whose ``.grad`` is clipped in place.
        max_norm: The threshold on the global norm.
        norm_type: The p of the p-norm; ``math.inf`` for the max norm.
        nonfinite: What to do when the total norm is NaN or infinite. ``"skip"`` zeroes every
            gradient on the device, without a sync, so the optimizer step adds nothing from this
            batch (momentum and decoupled weight decay still act; gradients are multiplied by
            ``g ** keep * keep`` with ``keep`` = 1 or 0, because ``g * 0`` stays NaN for NaN or
            inf elements while ``g ** 0 == 1``; this costs one extra pass over the gradients).
            ``"raise"`` raises ``RuntimeError``: the one host sync, reading the total norm.
            ``"ignore"`` does what torch does (NaN gradients propagate).
        foreach: Passed to torch's norm and scaling helpers.
        run: Receives the clip metrics.
        step: The global optimizer step for the report.

    Returns:
        The total norm of the gradients before clipping, as torch returns it.
    """
    if not (isinstance(max_norm, (int, float)) and max_norm > 0 and not math.isnan(max_norm)):
        raise ValueError(f"max_norm must be a number > 0, got {max_norm!r}")
    if nonfinite not in ("skip", "raise", "ignore"):
        raise ValueError(f"nonfinite must be 'skip', 'raise' or 'ignore', got {nonfinite!r}")
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    params = [p for p in parameters if p.grad is not None]
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        total = torch.tensor(0.0)
        report(run, {"clip/pre_norm": total, "clip/threshold": float(max_norm)}, step)
        return total
    total = get_total_norm(grads, norm_type, error_if_nonfinite=False, foreach=foreach)
    if nonfinite == "raise" and not torch.isfinite(total):  # the one deliberate sync
        raise RuntimeError(
            f"The total norm of order {norm_type} for gradients is non-finite at step {step}; "
            "use nonfinite='skip' to zero this update instead, or lower the learning rate"
        )
    if nonfinite == "skip":
        finite = torch.isfinite(total)
        coef = _coef(total, max_norm).nan_to_num(0.0) * finite
        for (device, _), idx in _foreach.group_by_device_dtype(grads).items():
            group = [grads[i] for i in idx]
            _foreach.pow_(group, finite.to(device=device, dtype=group[0].dtype))
            _foreach.mul_(group, coef.to(device=device, dtype=group[0].dtype))
        post = torch.where(finite, total * coef, torch.zeros_like(total))
    else:
        clip_grads_with_norm_(params, max_norm, total, foreach=foreach)
        coef = _coef(total, max_norm)
        post = total * coef
    if run is not None:
        metrics: dict[str, Metric] = {
            "clip/pre_norm": total,
            "clip/post_norm": post,
            "clip/coef": coef,
            "clip/threshold": float(max_norm),
            "clip/clipped": (total > max_norm).to(torch.float32),
        }
        report(run, metrics, step)
    return total


def log_clip(
    run: MetricSink | None, total_norm: torch.Tensor, max_norm: float, step: int | None = None
) -> dict[str, Metric]:
    """Report the return value of ``torch.nn.utils.clip_grad_norm_`` in one call.

    Logs the same ``clip/*`` metrics as :func:`clip_grad_norm`, derived on the device from the
    pre-clip total norm and the threshold torch used.
    """
    if not (isinstance(max_norm, (int, float)) and max_norm > 0):
        raise ValueError(f"max_norm must be a number > 0, got {max_norm!r}")
    total = torch.as_tensor(total_norm).detach()
    coef = _coef(total, max_norm)
    metrics: dict[str, Metric] = {
        "clip/pre_norm": total,
        "clip/post_norm": total * coef,
        "clip/coef": coef,
        "clip/threshold": float(max_norm),
        "clip/clipped": (total > max_norm).to(torch.float32),
    }
    report(run, metrics, step)
    return metrics


def clip_grad_value(
    parameters: torch.Tensor | Iterable[torch.Tensor],
    clip_value: float,
    *,
    foreach: bool | None = None,
    run: MetricSink | None = None,
    step: int | None = None,
) -> None:
    """Clamp every gradient element to ``[-clip_value, clip_value]`` like ``clip_grad_value_``.

    Reports ``clip/threshold``, the largest absolute gradient before clipping
    (``clip/pre_max``, one foreach inf-norm pass) and ``clip/clipped`` (1 when any element
    was clamped).
    """
    if not (isinstance(clip_value, (int, float)) and clip_value > 0):
        raise ValueError(f"clip_value must be a number > 0, got {clip_value!r}")
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    params = list(parameters)
    grads = _grads(params)
    metrics: dict[str, Metric] = {"clip/threshold": float(clip_value)}
    if run is not None and grads:
        with torch.no_grad():
            maxima = _foreach.norm(grads, math.inf)
            device = grads[0].device
            pre_max = torch.stack([m.to(device, torch.float32) for m in maxima]).max()
        metrics["clip/pre_max"] = pre_max
        metrics["clip/clipped"] = (pre_max > clip_value).to(torch.float32)
    clip_grad_value_(params, clip_value, foreach=foreach)
    report(run, metrics, step)
