"""Due-step probes: dead units, eps dominance and the EMA, as device tensors (no sync)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from trickscope import _foreach, setup, streamed
from trickscope.tricks.ema import ema_distance, ema_module
from trickscope.tricks.optim import eps_dominance

EPS_EVERY = 5  # eps dominance on every 5th due step: it reads all of Adam's second moments


def dead_units(names: Sequence[str], params: Sequence[Tensor]) -> list[tuple[str, Tensor]]:
    """Per ≥2-D parameter with a gradient, the fraction of output units (rows along dim 0)
    whose gradient is exactly zero, keyed ``grad_dead_units/<param>``."""
    out: list[tuple[str, Tensor]] = []
    for name, param in zip(names, params, strict=True):
        grad = param.grad
        if grad is None or grad.ndim < 2 or grad.shape[0] == 0 or grad.is_sparse:
            continue
        out.append((f"grad_dead_units/{name}", dead_rows(grad) / grad.shape[0]))
    return out


def dead_rows(grad: Tensor) -> Tensor:
    """How many rows along dim 0 of a ≥2-D (dense) gradient are exactly zero, float32 0-d: the
    count that merges across ranks by a sum where no row is split between them."""
    # max |x| per row, a bounded chunk of rows at a time: |x| is a temporary of the chunk's
    # size, not of the gradient's (an inf-norm along dim 1 needs none, but is ~100× slower on
    # CPU).
    if grad.shape[0] == 0:  # an empty shard
        return torch.zeros((), device=grad.device)
    matrix = grad.detach().reshape(grad.shape[0], -1)
    per_chunk = max(1, _foreach.PIECE_ELEMENTS // max(matrix.shape[1], 1))
    rows = torch.cat([chunk.abs().amax(1) for chunk in matrix.split(per_chunk)])
    return (rows == 0).sum(dtype=torch.float32)


def eps_fractions(
    optimizer: torch.optim.Optimizer, names: dict[int, str]
) -> list[tuple[str, Tensor]]:
    """``opt/eps_dominance/<param>``: among elements with v̂ > 0, the share where eps > √v̂."""
    fractions = eps_dominance(optimizer, names, among_positive=True)
    return [(f"opt/eps_dominance/{name}", value) for name, value in fractions.items()]


def eps_counts(
    optimizer: torch.optim.Optimizer, rows: dict[int, int], local: Callable[[Tensor], Tensor]
) -> dict[int, tuple[Tensor, Tensor]]:
    """For eps dominance merged across ranks: per parameter with Adam state (``rows``: ``id`` of
    a parameter → its row), the elements of this rank's piece (``local``) with ``v̂ > 0``, and
    those of them where ``eps > √v̂``, as float32 0-d tensors; sums of these over the ranks give
    :func:`eps_fractions`' fraction. One parameter at a time, a bounded chunk of ``v̂`` at a
    time (a whole copy would double Adam's state), on every :data:`EPS_EVERY`-th due step."""
    out: dict[int, tuple[Tensor, Tensor]] = {}
    with torch.no_grad():
        for group in optimizer.param_groups:
            betas, eps = group.get("betas"), group.get("eps")
            if betas is None or eps is None:
                continue
            for param in group["params"]:
                state = optimizer.state.get(param, {})
                v = state.get("max_exp_avg_sq", state.get("exp_avg_sq"))
                step = state.get("step")
                if not isinstance(v, Tensor) or step is None or id(param) not in rows:
                    continue
                piece = local(v)
                steps = torch.as_tensor(step, dtype=torch.float32)
                inverse = (1.0 / (1.0 - float(betas[1]) ** steps)).to(piece.device)
                positive = torch.zeros((), device=piece.device)
                below = torch.zeros((), device=piece.device)
                for part in streamed.pieces(piece, _foreach.PIECE_ELEMENTS):
                    v_hat = part * inverse
                    above_zero = v_hat > 0
                    positive = positive + above_zero.sum(dtype=torch.float32)
                    dominated = above_zero & (v_hat < float(eps) ** 2)
                    below = below + dominated.sum(dtype=torch.float32)
                out[rows[id(param)]] = (positive, below)
    return out


def ema_values(
    ema: Any, model: nn.Module, step: int
) -> tuple[list[tuple[str, Tensor]], list[tuple[str, float]]]:
    """``ema/distance``, ``ema/norm``, ``ema/bn_stats_norm`` with ``bn_stats_norm`` (and
    ``ema/updates`` when a tensor) as device values, and ``ema/decay`` (and ``ema/updates`` when a
    Python number) as host numbers."""
    averaged = ema_module(ema)
    device: list[tuple[str, Tensor]] = [("ema/distance", ema_distance(ema, model))]
    shadow = [p.detach() for p in averaged.parameters() if p.is_floating_point()]
    if shadow:
        with torch.no_grad():
            norms = _foreach.norm(shadow, dtype=torch.float32)
            here = shadow[0].device
            total = torch.linalg.vector_norm(torch.stack([n.to(here) for n in norms]))
        device.append(("ema/norm", total))
    device.extend(_normalisation_buffers(averaged, model))
    host: list[tuple[str, float]] = []
    decay, _ = setup.ema_decay(ema, step)
    if decay is not None:
        host.append(("ema/decay", decay))
    updates = getattr(ema, "n_averaged", None)
    if updates is None:
        updates = getattr(ema, "updates", None)
    if isinstance(updates, Tensor) and updates.numel() == 1:
        device.append(("ema/updates", updates.detach().reshape(()).float()))
    elif isinstance(updates, int) and not isinstance(updates, bool):
        host.append(("ema/updates", float(updates)))
    return device, host


def _running_stats(module: nn.Module) -> list[Tensor]:
    return [
        buffer.detach()
        for sub in module.modules()
        if isinstance(sub, nn.modules.batchnorm._NormBase)
        for buffer in (sub.running_mean, sub.running_var)
        if buffer is not None
    ]


def _normalisation_buffers(shadow: nn.Module, model: nn.Module) -> list[tuple[str, Tensor]]:
    """The norms of the EMA's and the model's BatchNorm running statistics, ``ema/bn_stats_norm``
    and ``bn_stats_norm``: an EMA that averages only parameters keeps the statistics of the step
    it was created, so its norm stays put while the model's moves (``ema-stale-batchnorm``)."""
    pairs = (
        ("ema/bn_stats_norm", _running_stats(shadow)),
        ("bn_stats_norm", _running_stats(model)),
    )
    if not all(stats for _, stats in pairs):
        return []
    found = []
    with torch.no_grad():
        for name, stats in pairs:
            norms = _foreach.norm(stats, dtype=torch.float32)
            here = stats[0].device
            found.append((name, torch.linalg.vector_norm(torch.stack([n.to(here) for n in norms]))))
    return found
