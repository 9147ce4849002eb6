"""What the trainer callbacks share: hooks that never raise, and the step they report at."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from trickscope._incidents import Incidents

F = TypeVar("F", bound=Callable[..., Any])


def guarded(where: str) -> Callable[[F], F]:
    """Wrap a callback hook so that a failure inside trickscope is one warning, never an
    exception in the training loop. The object needs an ``incidents`` attribute."""

    def decorate(hook: F) -> F:
        @functools.wraps(hook)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return hook(self, *args, **kwargs)
            except Exception as exc:
                incidents: Incidents = self.incidents
                incidents.error(f"{type(self).__name__}.{where}", exc)
                return None

        return wrapper  # type: ignore[return-value]

    return decorate


def last_step(global_step: int, start: int = 0) -> int:
    """The step a value logged now belongs to, as ``run.log`` numbers it after
    ``optimizer.step()``: the index of the last optimizer step taken (``global_step`` counts
    them), or ``start`` before the first."""
    return max(global_step - 1, start)


def inner_optimizer(optimizer: Any) -> torch.optim.Optimizer | None:
    """The torch optimizer under a wrapper (accelerate's ``AcceleratedOptimizer``, Lightning's
    ``LightningOptimizer``), whose ``step`` is the one that updates the weights."""
    seen = 0
    while not _is_plain_optimizer(optimizer) and seen < 4:
        optimizer = getattr(optimizer, "optimizer", None) or getattr(optimizer, "_optimizer", None)
        seen += 1
    return optimizer if isinstance(optimizer, torch.optim.Optimizer) else None


def _is_plain_optimizer(optimizer: Any) -> bool:
    # Wrappers subclass torch's Optimizer too, but hold the real one in ``optimizer``.
    return isinstance(optimizer, torch.optim.Optimizer) and not isinstance(
        getattr(optimizer, "optimizer", None), torch.optim.Optimizer
    )


def inner_scheduler(scheduler: Any) -> Any:
    """The scheduler under accelerate's ``AcceleratedScheduler`` (its ``scheduler``)."""
    inner = getattr(scheduler, "scheduler", None)
    return inner if inner is not None and hasattr(inner, "step") else scheduler


def numeric_items(values: dict[str, Any]) -> dict[str, float | torch.Tensor]:
    """The entries of a metrics dict that ``run.log`` takes: numbers and one-element tensors."""
    kept: dict[str, float | torch.Tensor] = {}
    for key, value in values.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, torch.Tensor):
            if value.numel() == 1:
                kept[key] = value
        elif isinstance(value, (int, float)):
            kept[key] = float(value)
    return kept
