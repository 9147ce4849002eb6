"""DropPath (stochastic depth): drop a residual branch per sample while training.

Huang et al. 2016, "Deep Networks with Stochastic Depth", https://arxiv.org/abs/1603.09382.
It must sit on the residual branch, ``x + drop_path(f(x))``; ``drop_path(f(x))`` alone zeroes the
whole block output of a dropped sample.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from trickscope._checks import check_int
from trickscope._modules import unwrap
from trickscope.tricks._sink import Finding, Metric, MetricSink, report, warn_findings


def _check_rate(p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p!r}")


def _mask(x: torch.Tensor, p: float, scale_by_keep: bool) -> torch.Tensor:
    keep = 1.0 - p
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    mask = x.new_empty(shape).bernoulli_(keep)
    if keep > 0.0 and scale_by_keep:
        mask.div_(keep)
    return mask


def drop_path(
    x: torch.Tensor, p: float = 0.0, training: bool = False, scale_by_keep: bool = True
) -> torch.Tensor:
    """Zero ``x`` for whole samples with probability ``p``; scale the kept ones by ``1/(1-p)``.

    The mask has one entry per sample (dimension 0), so the expectation of the output equals
    ``x``. An identity when ``training`` is false or ``p == 0``. Huang et al. 2016,
    https://arxiv.org/abs/1603.09382.

    Args:
        x: A batch, samples along dimension 0 (the output of a residual branch).
        p: Probability of dropping a sample.
        training: Apply the drop only when true.
        scale_by_keep: Divide kept samples by ``1 - p`` to keep the expectation.
    """
    _check_rate(p)
    if p == 0.0 or not training:
        return x
    return x * _mask(x, p, scale_by_keep)


def drop_path_rates(depth: int, max_rate: float) -> list[float]:
    """Per-block rates rising linearly from 0 to ``max_rate`` (timm's per-block rule)."""
    check_int("depth", depth, 1)
    _check_rate(max_rate)
    if depth == 1:
        return [0.0]
    return [max_rate * i / (depth - 1) for i in range(depth)]


class DropPath(nn.Module):
    """Module form of :func:`drop_path`, optionally recording the realised drop fraction.

    When ``record`` is true (set by :class:`DropPathMonitor` on due steps only), a training
    forward keeps ``realised``: the fraction of samples dropped, a 0-d tensor on the input's
    device, never synced.
    """

    def __init__(self, p: float = 0.0, scale_by_keep: bool = True) -> None:
        super().__init__()
        _check_rate(p)
        self.p = float(p)
        self.scale_by_keep = scale_by_keep
        self.record = False
        self.realised: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        mask = _mask(x, self.p, self.scale_by_keep)
        if self.record:
            self.realised = (mask == 0).to(torch.float32).mean().detach()
        return x * mask

    def extra_repr(self) -> str:
        return f"p={self.p:.3f}, scale_by_keep={self.scale_by_keep}"


def _rate(module: nn.Module) -> float | None:
    """The configured rate of a recognised DropPath module, else None."""
    if isinstance(module, DropPath):
        return module.p
    cls = type(module)
    qualified = f"{cls.__module__}.{cls.__name__}"
    if qualified.startswith("timm.") and cls.__name__ == "DropPath":
        return float(getattr(module, "drop_prob", 0.0))
    if qualified.startswith("torchvision.") and cls.__name__ == "StochasticDepth":
        return float(getattr(module, "p", 0.0))
    return None


class DropPathMonitor:
    """Reports configured and realised DropPath rates per block, and flags misconfiguration.

    Recognises this module's :class:`DropPath`, ``timm.layers.DropPath`` and torchvision's
    ``StochasticDepth``; realised fractions come from ours only. Call :meth:`report` once per
    optimizer step: on due steps (``step % every == 0``) it reports ``drop_path/rate/{block}``
    and ``drop_path/realised/{block}``, and it arms recording for the next due step's forward,
    so other steps cost one integer comparison per block.

    Example:
        >>> monitor = DropPathMonitor(model, run, every=100)
        >>> for step in range(total_steps):
        ...     loss = model(x).mean(); loss.backward(); optimizer.step()
        ...     monitor.report(step)
    """

    def __init__(self, model: nn.Module, run: MetricSink | None = None, every: int = 1) -> None:
        check_int("every", every, 1)
        self.model = model
        self.run = run
        self.every = every
        self.blocks: dict[str, nn.Module] = {
            name: m for name, m in unwrap(model).named_modules() if _rate(m) is not None
        }
        self._seen: set[str] = set()
        self._armed = False
        self._arm(True)

    def _arm(self, on: bool) -> None:
        self._armed = on
        for module in self.blocks.values():
            if isinstance(module, DropPath):
                module.record = on
                if not on:
                    module.realised = None

    def rates(self) -> dict[str, float]:
        """Configured rate per block, in model order."""
        return {name: _rate(m) or 0.0 for name, m in self.blocks.items()}

    def describe(self) -> dict[str, Any]:
        """Static configuration for the run config."""
        return {"drop_path_rates": self.rates(), "every": self.every}

    def check(self, step: int | None = None) -> list[Finding]:
        """Rates that do not rise with depth; DropPath in training mode while the model is not."""
        findings: list[Finding] = []
        rates = list(self.rates().items())
        for (prev_name, prev), (name, rate) in zip(rates, rates[1:], strict=False):
            if rate < prev:
                findings.append(
                    Finding(
                        "drop_path_rate_not_rising",
                        f"DropPath rate falls with depth at {name} ({rate:g} after {prev:g} at "
                        f"{prev_name}); stochastic depth rates usually rise linearly with depth: "
                        "use drop_path_rates(depth, max_rate).",
                        layer=name,
                        step=step,
                    )
                )
        if not self.model.training:
            for name, module in self.blocks.items():
                if module.training and (_rate(module) or 0.0) > 0.0:
                    findings.append(
                        Finding(
                            "drop_path_active_in_eval",
                            f"{name} is still in training mode while the model is in eval mode, "
                            "so it drops samples during evaluation; call model.eval() on the "
                            "whole model rather than on parts of it.",
                            layer=name,
                            step=step,
                        )
                    )
        return findings

    def report(self, step: int) -> dict[str, Metric]:
        """Report on due steps and arm recording for the next due step's forward pass."""
        metrics: dict[str, Metric] = {}
        if step % self.every == 0:
            for name, module in self.blocks.items():
                metrics[f"drop_path/rate/{name}"] = _rate(module) or 0.0
                realised = getattr(module, "realised", None)
                if isinstance(module, DropPath) and realised is not None:
                    metrics[f"drop_path/realised/{name}"] = realised
            warn_findings(self.check(step), self._seen)
            report(self.run, metrics, step)
        due_next = (step + 1) % self.every == 0
        if due_next != self._armed:
            self._arm(due_next)
        return metrics
