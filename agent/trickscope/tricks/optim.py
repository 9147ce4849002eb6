"""SGD momentum and Adam betas/eps: build an optimizer, report its hyperparameters and state.

SGD with momentum in PyTorch's form ``v ← μv + g`` (Sutskever et al. 2013,
https://proceedings.mlr.press/v28/sutskever13.html); AdamW (Loshchilov & Hutter 2019,
https://arxiv.org/abs/1711.05101; Kingma & Ba 2015, https://arxiv.org/abs/1412.6980).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Literal

import torch

from trickscope import _foreach
from trickscope._checks import check_int
from trickscope._modules import unwrap
from trickscope.tricks._sink import Metric, MetricSink, report

OptimizerKind = Literal["sgd", "adamw"]


def _check_probability(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and 0.0 <= value < 1.0):
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")


def build_optimizer(
    params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
    kind: OptimizerKind = "adamw",
    *,
    lr: float,
    momentum: float = 0.9,
    nesterov: bool = False,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    run: MetricSink | None = None,
) -> torch.optim.Optimizer:
    """A real ``torch.optim.SGD`` or ``torch.optim.AdamW`` with checked arguments.

    ``momentum`` and ``nesterov`` apply to SGD, ``betas`` and ``eps`` to AdamW; ``weight_decay``
    is coupled (L2) for SGD and decoupled for AdamW. Param groups (e.g. from
    ``param_groups_weight_decay``) keep their own ``weight_decay``. With ``run``, the
    hyperparameters are reported once at step 0.
    """
    if kind not in ("sgd", "adamw"):
        raise ValueError(f"kind must be 'sgd' or 'adamw', got {kind!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if not (isinstance(weight_decay, (int, float)) and weight_decay >= 0):
        raise ValueError(f"weight_decay must be a number >= 0, got {weight_decay!r}")
    optimizer: torch.optim.Optimizer
    if kind == "sgd":
        _check_probability("momentum", momentum)
        if nesterov and momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0, got momentum=0")
        optimizer = torch.optim.SGD(
            params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay
        )
    else:
        if len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        _check_probability("betas[0]", betas[0])
        _check_probability("betas[1]", betas[1])
        if not (isinstance(eps, (int, float)) and eps > 0):
            raise ValueError(f"eps must be a number > 0, got {eps!r}")
        optimizer = torch.optim.AdamW(
            params, lr=lr, betas=(betas[0], betas[1]), eps=eps, weight_decay=weight_decay
        )
    if run is not None:
        report_hyperparameters(optimizer, run, step=0)
    return optimizer


def report_hyperparameters(
    optimizer: torch.optim.Optimizer, run: MetricSink | None, step: int | None = None
) -> dict[str, Metric]:
    """Report per-group momentum (SGD family) or betas and eps (Adam family).

    Momentum groups give ``opt/momentum/group{i}``, ``opt/nesterov/group{i}`` and the effective
    step ``opt/effective_lr/group{i}`` = lr/(1−μ); groups with ``betas`` give
    ``opt/beta1/group{i}``, ``opt/beta2/group{i}`` and ``opt/eps/group{i}``. Works with any
    optimizer whose groups have those fields; values are read as stored (no sync).
    """
    metrics: dict[str, Metric] = {}
    for i, group in enumerate(optimizer.param_groups):
        if "momentum" in group:
            momentum = group["momentum"]
            metrics[f"opt/momentum/group{i}"] = momentum
            metrics[f"opt/nesterov/group{i}"] = 1.0 if group.get("nesterov", False) else 0.0
            if isinstance(momentum, torch.Tensor) or momentum < 1:
                metrics[f"opt/effective_lr/group{i}"] = group["lr"] / (1 - momentum)
        betas = group.get("betas")
        if betas is not None:
            metrics[f"opt/beta1/group{i}"] = betas[0]
            metrics[f"opt/beta2/group{i}"] = betas[1]
        if betas is not None and "eps" in group and group["eps"] is not None:
            metrics[f"opt/eps/group{i}"] = group["eps"]
    report(run, metrics, step)
    return metrics


def eps_dominance(
    optimizer: torch.optim.Optimizer,
    names: dict[int, str] | None = None,
    *,
    among_positive: bool = False,
) -> dict[str, torch.Tensor]:
    """Per parameter, the fraction of elements where ``eps > sqrt(v̂)``, as 0-d tensors.

    With ``among_positive`` the fraction is taken among elements with ``v̂ > 0`` only: elements
    that never had a gradient (an unused embedding row, say) do not count as eps-dominated.

    ``v̂ = exp_avg_sq / (1 − β2^t)`` is Adam's bias-corrected second moment (``max_exp_avg_sq``
    with AMSGrad); where eps dominates, the Adam step degrades to momentum SGD with LR lr/eps.
    One foreach pass per op over every parameter with state, no sync. Keys are parameter names
    from ``names`` (``id(param) -> name``) or the groups' ``param_names``, else
    ``group{i}.{j}``.
    """
    vs: list[torch.Tensor] = []
    steps: list[torch.Tensor] = []
    beta2s: list[float] = []
    thresholds: list[float] = []
    keys: list[str] = []
    for i, group in enumerate(optimizer.param_groups):
        betas, eps = group.get("betas"), group.get("eps")
        if betas is None or eps is None:
            continue
        group_names = group.get("param_names")
        for j, param in enumerate(group["params"]):
            state = optimizer.state.get(param, {})
            v = state.get("max_exp_avg_sq", state.get("exp_avg_sq"))
            step = state.get("step")
            if not isinstance(v, torch.Tensor) or step is None:
                continue
            vs.append(v.detach())
            steps.append(torch.as_tensor(step, dtype=torch.float32))
            beta2s.append(float(betas[1]))
            thresholds.append(float(eps) ** 2)
            if names is not None and id(param) in names:
                keys.append(names[id(param)])
            elif group_names is not None:
                keys.append(group_names[j])
            else:
                keys.append(f"group{i}.{j}")
    if not vs:
        return {}
    with torch.no_grad():
        inv_bias: list[torch.Tensor] = [torch.empty(0)] * len(vs)
        # Bias corrections for all parameters in one vector per (step device, state device):
        # step counts live on the CPU for non-capturable optimizers, so this is at most a small
        # host-to-device copy, never a device-to-host one.
        by_device: dict[tuple[torch.device, torch.device], list[int]] = {}
        for k, (s, v) in enumerate(zip(steps, vs, strict=True)):
            by_device.setdefault((s.device, v.device), []).append(k)
        for (step_device, v_device), idx in by_device.items():
            t = torch.stack([steps[k] for k in idx])
            beta2 = torch.tensor([beta2s[k] for k in idx], dtype=torch.float32, device=step_device)
            inv = (1.0 / (1.0 - beta2**t)).to(v_device, non_blocking=True)
            for k, value in zip(idx, inv.unbind(), strict=True):
                inv_bias[k] = value
        # v̂ is made a bounded chunk at a time (a whole copy would double Adam's state).
        below: list[torch.Tensor | float] = [0.0] * len(vs)
        positive: list[torch.Tensor | float] = [0.0] * len(vs)
        for owners, parts in _foreach.pieces(vs):
            v_hat = _foreach.mul(parts, [inv_bias[k] for k in owners])
            counts = _foreach.count_below(v_hat, [thresholds[k] for k in owners])
            nonzero = _foreach.norm(v_hat, 0, dtype=torch.float32) if among_positive else counts
            for k, count, nz in zip(owners, counts, nonzero, strict=True):
                below[k] = below[k] + count
                positive[k] = positive[k] + nz
        fractions = []
        for v, count, nz in zip(vs, below, positive, strict=True):
            n = max(v.numel(), 1)
            if among_positive:
                # count is of v̂ < eps² (zeros included); ‖v̂‖₀ counts v̂ > 0 (v̂ is never < 0).
                nz = torch.as_tensor(nz, dtype=torch.float32, device=v.device)
                fraction = ((count - (v.numel() - nz)) / nz.clamp_min(1)).clamp_min(0)
            else:
                fraction = torch.as_tensor(count, dtype=torch.float32, device=v.device) / n
            fractions.append(fraction)
    return dict(zip(keys, fractions, strict=True))


class OptimizerReporter:
    """Reports an optimizer's hyperparameters each call and eps dominance on due steps.

    Example:
        >>> reporter = OptimizerReporter(optimizer, run, every=100, model=model)
        >>> for step in range(total_steps):
        ...     train_step(); optimizer.step()
        ...     reporter.report(step)
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        run: MetricSink | None = None,
        *,
        every: int = 100,
        model: torch.nn.Module | None = None,
    ) -> None:
        check_int("every", every, 1)
        self.optimizer = optimizer
        self.run = run
        self.every = every
        self.names = (
            {id(p): n for n, p in unwrap(model).named_parameters()} if model is not None else None
        )

    def report(self, step: int) -> dict[str, Metric]:
        """Report hyperparameters, plus ``opt/eps_dominance/{param}`` when ``step`` is due."""
        metrics = report_hyperparameters(self.optimizer, None, step)
        if step % self.every == 0:
            for name, fraction in eps_dominance(self.optimizer, self.names).items():
                metrics[f"opt/eps_dominance/{name}"] = fraction
        report(self.run, metrics, step)
        return metrics

    def describe(self) -> dict[str, Any]:
        """Static configuration for the run config."""
        return {
            "optimizer": type(self.optimizer).__name__,
            "groups": [
                {k: v for k, v in g.items() if k not in ("params", "param_names")}
                for g in self.optimizer.param_groups
            ],
        }
