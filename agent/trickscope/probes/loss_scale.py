"""The per-sample scale of ∂loss/∂logits, for a softmax cross-entropy output.

For ``loss = c · Σ_i CE(z_i, y_i)`` the gradient at the logits is
``c · (softmax(z_i) − onehot(y_i))``
row by row. The probe recovers ``y`` as the row's smallest gradient, fits ``c`` per row by least
squares and keeps the result only when the fit is exact (relative residual below
:data:`RESIDUAL`): then it is a softmax cross-entropy. ``c × batch`` is ≈1 for a mean-reduced
loss and ≈1/N when it is divided by N accumulation steps. When the rows that cross-entropy
took as logits are themselves probabilities, the model already ended in a softmax: the loss
applies a second one, which squeezes every gradient into a narrow range.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from trickscope._incidents import Incidents
from trickscope.probes._hook import Hook

RESIDUAL = 1e-3
PROBABILITY_SUM = 1e-3  # rows summing to 1 within this, all ≥ 0: the output is probabilities


def scale_of(logits: Tensor, grad: Tensor) -> Tensor:
    """``[median row scale × batch, relative residual, probabilities]`` as a float32 device
    vector; ``probabilities`` is 1 when every row of the output is non-negative and sums to 1
    (a softmax already applied: cross-entropy then applies a second one)."""
    g = grad.detach().float()
    p = torch.softmax(logits.detach().float(), 1)
    y = g.argmin(1)
    d = p - torch.nn.functional.one_hot(y, g.shape[1]).to(p.dtype)
    tiny = torch.finfo(torch.float32).tiny
    rows = (g * d).sum(1) / (d * d).sum(1).clamp_min(tiny)
    residual = torch.linalg.vector_norm(g - rows[:, None] * d) / torch.linalg.vector_norm(
        g
    ).clamp_min(tiny)
    z = logits.detach().float()
    probabilities = (z.amin() >= 0) & ((z.sum(1) - 1).abs().amax() <= PROBABILITY_SUM)
    return torch.stack([rows.median() * g.shape[0], residual, probabilities.float()])


class LossScaleProbe:
    """A forward hook on the model that, when armed, hooks the output's gradient."""

    def __init__(self, model: nn.Module, incidents: Incidents) -> None:
        self.armed = False
        self._incidents = incidents
        self.value: Tensor | None = None  # [scale, residual, probabilities] of the last backward
        self._handle = model.register_forward_hook(Hook(self._on_forward))

    def _on_forward(self, module: nn.Module, args: Any, output: Any) -> None:
        if not self.armed or not isinstance(output, Tensor):
            return
        if output.ndim != 2 or output.shape[1] < 2 or not output.requires_grad:
            return
        if not output.is_floating_point():
            return
        logits = output.detach()

        def on_grad(grad: Tensor) -> None:
            try:  # inside the user's backward: nothing may escape
                with torch.no_grad():
                    self.value = scale_of(logits, grad)
            except Exception as exc:
                self._incidents.error("loss-scale probe", exc)

        output.register_hook(Hook(on_grad))

    def take(self) -> Tensor | None:
        """The last measured ``[scale, residual, probabilities]``; resets it."""
        value, self.value = self.value, None
        return value

    def close(self) -> None:
        """Remove the hook."""
        self._handle.remove()
