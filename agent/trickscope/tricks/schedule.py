"""Learning-rate warmup followed by a decay, as a pure function and a small scheduler object.

Warmup: Goyal et al. 2017, https://arxiv.org/abs/1706.02677 (linear warmup for large batches);
Ma & Yarats 2019, https://arxiv.org/abs/1910.04209 (Adam needs about 2/(1-β2) warmup steps).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch

from trickscope._checks import check_int
from trickscope.tricks._sink import Metric, MetricSink, report

Warmup = Literal["linear", "exponential"]
Decay = Literal["cosine", "step", "linear", "constant"]
_WARMUPS = ("linear", "exponential")
_DECAYS = ("cosine", "step", "linear", "constant")


def _check_schedule(
    *,
    base_lr: float,
    total_steps: int,
    warmup_steps: int,
    warmup: str,
    decay: str,
    min_lr: float,
    step_size: int | None,
    gamma: float,
    warmup_start_factor: float,
) -> None:
    check_int("total_steps", total_steps, 1)
    if not isinstance(warmup_steps, int) or not 0 <= warmup_steps <= total_steps:
        raise ValueError(
            f"warmup_steps must be an int in [0, total_steps={total_steps}], got {warmup_steps!r}"
        )
    if warmup not in _WARMUPS:
        raise ValueError(f"warmup must be one of {_WARMUPS}, got {warmup!r}")
    if decay not in _DECAYS:
        raise ValueError(f"decay must be one of {_DECAYS}, got {decay!r}")
    if not math.isfinite(base_lr) or base_lr < 0:
        raise ValueError(f"base_lr must be a finite number >= 0, got {base_lr!r}")
    if not math.isfinite(min_lr) or not 0 <= min_lr <= base_lr:
        raise ValueError(f"min_lr must be in [0, base_lr={base_lr}], got {min_lr!r}")
    if decay == "step" and (not isinstance(step_size, int) or step_size < 1):
        raise ValueError(f"step_size must be an int >= 1 for decay='step', got {step_size!r}")
    if not 0 < gamma <= 1:
        raise ValueError(f"gamma must be in (0, 1], got {gamma!r}")
    if not 0 < warmup_start_factor <= 1:
        raise ValueError(f"warmup_start_factor must be in (0, 1], got {warmup_start_factor!r}")


def lr_at(
    step: int,
    *,
    base_lr: float,
    total_steps: int,
    warmup_steps: int = 0,
    warmup: Warmup = "linear",
    decay: Decay = "cosine",
    min_lr: float = 0.0,
    step_size: int | None = None,
    gamma: float = 0.1,
    warmup_start_factor: float = 0.01,
) -> float:
    """The learning rate for optimizer step ``step`` (0-based).

    Warmup covers steps ``0 .. warmup_steps-1`` and reaches ``base_lr`` on its last step:
    ``"linear"`` gives ``base_lr·(step+1)/warmup_steps`` (never zero, Goyal et al. 2017);
    ``"exponential"`` rises geometrically from ``base_lr·warmup_start_factor`` at step 0.
    Decay then runs over ``t = step - warmup_steps`` in ``T = total_steps - warmup_steps``:
    ``"cosine"`` is ``min_lr + (base_lr-min_lr)·(1+cos(π·t/T))/2``, ``"linear"`` falls to
    ``min_lr`` at ``t = T``, ``"step"`` multiplies by ``gamma`` every ``step_size`` steps (floored
    at ``min_lr``), ``"constant"`` stays at ``base_lr``. Steps past ``total_steps`` keep the
    final value.

    Args:
        step: The global optimizer step.
        base_lr: The peak learning rate.
        total_steps: Steps in the whole schedule, warmup included.
        warmup_steps: Steps of warmup; 0 starts the decay at once.
        warmup: Shape of the warmup.
        decay: Shape of the decay after warmup.
        min_lr: The floor reached at the end of cosine and linear decay.
        step_size: Steps between multiplications by ``gamma`` (``decay="step"`` only).
        gamma: Factor of step decay.
        warmup_start_factor: Fraction of ``base_lr`` at step 0 of exponential warmup.
    """
    if not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be an int >= 0, got {step!r}")
    _check_schedule(
        base_lr=base_lr,
        total_steps=total_steps,
        warmup_steps=warmup_steps,
        warmup=warmup,
        decay=decay,
        min_lr=min_lr,
        step_size=step_size,
        gamma=gamma,
        warmup_start_factor=warmup_start_factor,
    )
    return _lr_at(
        step, base_lr, total_steps, warmup_steps, warmup, decay, min_lr, step_size, gamma,
        warmup_start_factor,
    )  # fmt: skip


def _lr_at(
    step: int,
    base_lr: float,
    total_steps: int,
    warmup_steps: int,
    warmup: str,
    decay: str,
    min_lr: float,
    step_size: int | None,
    gamma: float,
    warmup_start_factor: float,
) -> float:
    if step < warmup_steps:
        if warmup == "linear":
            return base_lr * (step + 1) / warmup_steps
        if warmup_steps == 1:
            return base_lr
        return base_lr * warmup_start_factor ** (1.0 - step / (warmup_steps - 1))
    t = step - warmup_steps
    span = total_steps - warmup_steps
    if decay == "constant" or span == 0:
        return base_lr
    if decay == "step":
        size = step_size if step_size is not None else 1  # _check_schedule requires it
        return max(min_lr, base_lr * gamma ** (min(t, span) // size))
    progress = min(t, span) / span
    if decay == "cosine":
        return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_lr + (base_lr - min_lr) * (1.0 - progress)


def recommended_warmup_steps(beta2: float) -> int:
    """Ma & Yarats' rule of thumb: ``2/(1-β2)`` warmup steps for Adam (2000 for β2=0.999).

    https://arxiv.org/abs/1910.04209
    """
    if not 0 <= beta2 < 1:
        raise ValueError(f"beta2 must be in [0, 1), got {beta2!r}")
    return math.ceil(2.0 / (1.0 - beta2))


class WarmupDecay:
    """Writes :func:`lr_at` into every param group of an optimizer and reports it.

    Follows torch's LR-scheduler protocol: construction applies step 0 (``last_epoch == 0``);
    ``step()`` advances by one (call it after ``optimizer.step()``), ``step(step)`` sets the LR
    for that global step explicitly (preferred: no hidden counter). Each group keeps its own
    peak LR (its ``initial_lr``, taken from ``lr`` the first time), so per-group LRs keep their
    ratios. Every call reports ``lr/group{i}`` at the step the LR applies to. ``warmup_steps``
    is exposed for the dashboard's shaded span.

    Example:
        >>> scheduler = WarmupDecay(optimizer, total_steps=10_000, warmup_steps=500, run=run)
        >>> for step in range(10_000):
        ...     scheduler.step(step)
        ...     loss = train_step(batch)
        ...     optimizer.step()
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        total_steps: int,
        warmup_steps: int = 0,
        warmup: Warmup = "linear",
        decay: Decay = "cosine",
        min_lr: float = 0.0,
        step_size: int | None = None,
        gamma: float = 0.1,
        warmup_start_factor: float = 0.01,
        run: MetricSink | None = None,
        last_epoch: int = -1,
    ) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer)!r}")
        if not isinstance(last_epoch, int) or last_epoch < -1:
            raise ValueError(f"last_epoch must be an int >= -1, got {last_epoch!r}")
        for group in optimizer.param_groups:
            if last_epoch == -1:
                group.setdefault("initial_lr", group["lr"])
            elif "initial_lr" not in group:
                raise KeyError(
                    "param 'initial_lr' is not specified in param_groups when resuming with "
                    f"last_epoch={last_epoch}; load the optimizer's state_dict first"
                )
        self.optimizer = optimizer
        self.base_lrs: list[float] = [float(g["initial_lr"]) for g in optimizer.param_groups]
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.warmup = warmup
        self.decay = decay
        self.min_lr = min_lr
        self.step_size = step_size
        self.gamma = gamma
        self.warmup_start_factor = warmup_start_factor
        self.run = run
        for base_lr in self.base_lrs:
            self._check(base_lr)
        self.last_epoch = last_epoch
        self._last_lr: list[float] = []
        self.step()

    def _check(self, base_lr: float) -> None:
        _check_schedule(
            base_lr=base_lr,
            total_steps=self.total_steps,
            warmup_steps=self.warmup_steps,
            warmup=self.warmup,
            decay=self.decay,
            min_lr=self.min_lr,
            step_size=self.step_size,
            gamma=self.gamma,
            warmup_start_factor=self.warmup_start_factor,
        )

    def lr_at(self, step: int, group: int = 0) -> float:
        """The LR this schedule gives param group ``group`` at ``step``."""
        return _lr_at(
            step, self.base_lrs[group], self.total_steps, self.warmup_steps, self.warmup,
            self.decay, self.min_lr, self.step_size, self.gamma, self.warmup_start_factor,
        )  # fmt: skip

    def get_lr(self) -> list[float]:
        """The LRs for ``last_epoch``, one per param group."""
        return [self.lr_at(max(self.last_epoch, 0), i) for i in range(len(self.base_lrs))]

    def get_last_lr(self) -> list[float]:
        """The LRs last written to the param groups."""
        return list(self._last_lr)

    def step(self, step: int | None = None) -> None:
        """Write the LR for ``step`` (or ``last_epoch + 1``) into the param groups and report."""
        if step is None:
            step = self.last_epoch + 1
        elif not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be an int >= 0, got {step!r}")
        self.last_epoch = step
        self._apply()

    def _apply(self) -> None:
        lrs = self.get_lr()
        metrics: dict[str, Metric] = {}
        for i, (group, lr) in enumerate(zip(self.optimizer.param_groups, lrs, strict=True)):
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(lr)  # capturable/fused optimizers keep lr as a tensor
            else:
                group["lr"] = lr
            metrics[f"lr/group{i}"] = lr
        self._last_lr = lrs
        report(self.run, metrics, self.last_epoch)

    def state_dict(self) -> dict[str, Any]:
        """The schedule's configuration and position, with named fields."""
        return {
            "last_epoch": self.last_epoch,
            "base_lrs": list(self.base_lrs),
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "warmup": self.warmup,
            "decay": self.decay,
            "min_lr": self.min_lr,
            "step_size": self.step_size,
            "gamma": self.gamma,
            "warmup_start_factor": self.warmup_start_factor,
            "last_lr": list(self._last_lr),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` and rewrite the param groups' LRs for its step."""
        missing = set(self.state_dict()) - set(state_dict)
        if missing:
            raise KeyError(f"state_dict is missing fields {sorted(missing)}")
        if len(state_dict["base_lrs"]) != len(self.optimizer.param_groups):
            raise ValueError(
                f"state_dict has {len(state_dict['base_lrs'])} base_lrs but the optimizer has "
                f"{len(self.optimizer.param_groups)} param groups"
            )
        for key in ("total_steps", "warmup_steps", "warmup", "decay", "min_lr", "step_size"):
            setattr(self, key, state_dict[key])
        self.gamma = state_dict["gamma"]
        self.warmup_start_factor = state_dict["warmup_start_factor"]
        self.base_lrs = [float(x) for x in state_dict["base_lrs"]]
        for base_lr in self.base_lrs:
            self._check(base_lr)
        self.last_epoch = int(state_dict["last_epoch"])
        lrs = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr
        self._last_lr = lrs

    def describe(self) -> dict[str, Any]:
        """Static configuration for the run config (the warmup span is shaded on the charts)."""
        described = self.state_dict()
        del described["last_epoch"], described["last_lr"]
        return described

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(total_steps={self.total_steps}, "
            f"warmup_steps={self.warmup_steps}, warmup={self.warmup!r}, decay={self.decay!r}, "
            f"min_lr={self.min_lr}, last_epoch={self.last_epoch})"
        )
