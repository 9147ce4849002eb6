"""Run Lightning's training closure before ``watch``'s optimizer hooks see the step.

Lightning calls ``optimizer.step(closure=...)``, and the closure runs the forward, the backward,
``on_before_optimizer_step`` and the gradient clipping. A torch optimizer calls the closure inside
``step()``, after its step pre-hooks: ``watch`` would look at the gradients before they exist.
This pre-hook, registered before ``watch``'s, calls the closure itself and hands the optimizer a
closure that returns the same result, so every hook after it sees the gradients as a plain loop
leaves them: after accumulation, unscaling and clipping, before the update. It uses the
optimizer's public hook API (a pre-hook may replace the step's arguments); nothing is patched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.hooks import RemovableHandle


class _Evaluated:
    """A closure already called: returns its result again."""

    def __init__(self, result: Any) -> None:
        self.result = result

    def __call__(self) -> Any:
        return self.result


def _pending(closure: Any) -> bool:
    return callable(closure) and not isinstance(closure, _Evaluated)


def _closure_first(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> Any:
    # The user's training step runs here: its exceptions are the training's own, as they would
    # be from inside optimizer.step(), so they are not caught.
    if isinstance(kwargs, dict) and _pending(kwargs.get("closure")):
        closure: Callable[[], Any] = kwargs["closure"]
        with torch.enable_grad():
            result = closure()
        return args, {**kwargs, "closure": _Evaluated(result)}
    # The hook's args start with the optimizer itself (``step`` is a method).
    at = 1 if isinstance(args, tuple) and args and args[0] is optimizer else 0
    if isinstance(args, tuple) and len(args) > at and _pending(args[at]):
        with torch.enable_grad():
            result = args[at]()
        return (*args[:at], _Evaluated(result), *args[at + 1 :]), kwargs
    return None


def evaluate_closure_first(optimizer: torch.optim.Optimizer) -> RemovableHandle | None:
    """Register the pre-hook on ``optimizer``; ``None`` for optimizers that call their closure
    more than once (LBFGS), whose step cannot be split this way."""
    if isinstance(optimizer, torch.optim.LBFGS):
        return None
    return optimizer.register_step_pre_hook(_closure_first)
