"""Backward passes per step, the clip coefficient and gradients never zeroed, from a few small
parameters.

Clipping scales every gradient by one coefficient, so one parameter's gradient norm taken after
its last backward and again at ``optimizer.step()`` gives it: coefficient = after / before. The
hooks (``register_post_accumulate_grad_hook``) also count backward passes since the last step,
and a gradient still there when a step's first backward begins was never cleared by zero_grad.
A few small parameters of distinct modules keep that cheap and robust to one of them having no
gradient.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from trickscope._incidents import Incidents
from trickscope.dtensors import local
from trickscope.probes._hook import Hook

SENTINELS = 3


def pick(names: Sequence[str], params: Sequence[Tensor], count: int = SENTINELS) -> list[int]:
    """Indices of up to ``count`` smallest parameters that require grad, of distinct modules."""
    order = sorted(
        (i for i, p in enumerate(params) if p.requires_grad and p.numel() > 0),
        key=lambda i: (params[i].numel(), i),
    )
    chosen: list[int] = []
    modules: set[str] = set()
    for i in order:
        module = names[i].rpartition(".")[0]
        if module in modules:
            continue
        modules.add(module)
        chosen.append(i)
        if len(chosen) == count:
            break
    return chosen


class Sentinels:
    """Post-accumulate-grad hooks on the chosen parameters."""

    def __init__(self, params: Sequence[Tensor], incidents: Incidents) -> None:
        self.params = list(params)
        self._incidents = incidents
        self.counts = [0] * len(self.params)
        # The last backward's accumulated gradient norm, a 0-d device tensor (None: no backward).
        self.before: list[Tensor | None] = [None] * len(self.params)
        # The norm of a gradient the step's first backward found still there, not cleared by
        # zero_grad since the last step: 0-d device tensors (None: cleared, or no backward yet).
        self.carried: list[Tensor | None] = [None] * len(self.params)
        self._handles: list[Any] = []
        for index, param in enumerate(self.params):
            self._handles.append(param.register_hook(Hook(self._fresh(index))))
            self._handles.append(param.register_post_accumulate_grad_hook(Hook(self._hook(index))))

    def _fresh(self, index: int) -> Any:
        # Runs before the gradient is accumulated: no .grad yet means it was cleared
        # (zero_grad(set_to_none=True)) since the last pass, so a new accumulation starts. That
        # also keeps a step a GradScaler skipped from adding its passes to the next one.
        def hook(grad: Tensor) -> None:
            held = self.params[index].grad
            if held is None:
                self.counts[index] = 0
            elif self.counts[index] == 0 and self.carried[index] is None:
                # The first backward since the step, and the step's gradient is still there:
                # zero_grad was not called (its set_to_none=False form leaves a zero norm).
                try:  # inside the user's backward: nothing may escape
                    with torch.no_grad():
                        self.carried[index] = _local_norm(held)
                except Exception as exc:
                    self._incidents.error("carried-gradient sentinel", exc)

        return hook

    def _hook(self, index: int) -> Any:
        def hook(param: Tensor) -> None:
            self.counts[index] += 1
            try:  # inside the user's backward: nothing may escape
                grad = param.grad
                if grad is not None:
                    with torch.no_grad():
                        self.before[index] = _local_norm(grad)
            except Exception as exc:
                self._incidents.error("clip sentinel", exc)

        return hook

    def take(self) -> tuple[int, list[Tensor], list[Tensor]]:
        """At the step: backward passes since the last step, and per sentinel with a stored
        norm, (before, after) 0-d float32 tensors; resets for the next step."""
        passes = max(self.counts, default=0)
        befores: list[Tensor] = []
        afters: list[Tensor] = []
        for index, param in enumerate(self.params):
            before = self.before[index]
            grad = param.grad
            if before is None or grad is None:
                continue
            befores.append(before)
            afters.append(_local_norm(grad))
        self.counts = [0] * len(self.params)
        self.before = [None] * len(self.params)
        return passes, befores, afters

    def take_carried(self) -> Tensor | None:
        """The largest norm of a gradient carried into this step from the previous one, a 0-d
        float32 device tensor (0 where zero_grad left zeros), or None when every sentinel's
        gradient was cleared; resets for the next step."""
        carried = [c for c in self.carried if c is not None]
        self.carried = [None] * len(self.params)
        if not carried:
            return None
        return torch.stack([c.to(carried[0].device) for c in carried]).amax()

    def close(self) -> None:
        """Remove the hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles = []


def _local_norm(grad: Tensor) -> Tensor:
    """The L2 norm of this rank's piece of ``grad`` (all of it unless a DTensor, whose norm
    would be a collective on this rank alone). Clipping scales every element by one
    coefficient, so the ratio of a piece's norms is the coefficient."""
    return torch.linalg.vector_norm(local(grad), dtype=torch.float32)


def coefficient(
    befores: Sequence[float], afters: Sequence[float], scale: float | None
) -> float | None:
    """The clip coefficient from host values: after/before of the sentinel with the largest
    before-norm, with an AMP unscale (``scale``: the scaler's scale, or ``None``) taken out. A
    ratio that is an exact power of two is an unscale, not clipping. ``None``: no sentinel had
    a non-zero gradient."""
    best = -1
    for i, before in enumerate(befores):
        if before > 0 and before == before and before != float("inf"):
            if best < 0 or before > befores[best]:
                best = i
    if best < 0:
        return None
    ratio = afters[best] / befores[best]
    if scale is not None and scale > 0:
        ratio *= scale
    if ratio > 0 and ratio == ratio and _power_of_two(ratio):
        return 1.0
    return ratio


def _power_of_two(value: float) -> bool:
    mantissa, _ = math.frexp(value)
    return mantissa == 0.5
