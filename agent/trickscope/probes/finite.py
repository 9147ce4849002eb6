"""The first non-finite weight or gradient, as an agent finding (``docs/diagnosis.md`` §3)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from trickscope_wire import AgentFinding, finite_or_token

_TEXT = {
    "weight": (
        "nonfinite-weight",
        "A weight became NaN/Inf in {layer} at step {step}",
        "A non-finite weight poisons every later forward pass: the loss and every gradient that "
        "depends on it turn NaN, and training cannot recover by itself. The weights were checked "
        "before this step's update, so the value was written by an earlier update or by code "
        "outside the optimizer.",
        "Look at the gradient and update of {layer} on the steps just before: lower the learning "
        "rate, clip gradients, or use a loss scaler under mixed precision; check any code that "
        "writes weights directly.",
    ),
    "gradient": (
        "nonfinite-gradient",
        "A gradient became NaN/Inf in {layer} at step {step}",
        "The optimizer received a non-finite gradient; unless a GradScaler skips the step, the "
        "update writes NaN/Inf into the weights.",
        "Check the loss and the forward pass for overflow (log of zero, division by zero, large "
        "activations in low precision); clip gradients or use a GradScaler under mixed precision.",
    ),
}


def first_nonfinite(
    kind: str, step: int, names: Sequence[str], norms: Sequence[float]
) -> AgentFinding | None:
    """A finding naming the first of ``names`` (model order) whose norm is not finite, or
    ``None``. ``kind`` is ``"weight"`` or ``"gradient"``."""
    bad = [i for i, value in enumerate(norms) if not math.isfinite(value)]
    if not bad:
        return None
    first = bad[0]
    check, title, why, remedy = _TEXT[kind]
    layer = names[first]
    return AgentFinding(
        check=check,
        severity="error",
        title=title.format(layer=layer, step=step),
        why=why,
        remedy=remedy.format(layer=layer),
        step=step,
        layer=layer,
        evidence={
            "kind": kind,
            "value": finite_or_token(norms[first]),
            "statistic": "l2 norm",
            "other_layers": len(bad) - 1,
            "layers": [names[i] for i in bad[:10]],
        },
    )
