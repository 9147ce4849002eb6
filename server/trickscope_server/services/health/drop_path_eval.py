"""DropPath that still drops in eval mode.

Stochastic depth (Huang et al. 2016, https://arxiv.org/abs/1603.09382) drops residual branches
only while training; in eval a DropPath is the identity (timm's, torchvision's ``StochasticDepth``
and trickscope's return their input). A hand-written one that ignores ``self.training``, or a
functional ``drop_path(x, p, training=True)``, keeps zeroing and rescaling branches at random:
evaluation metrics are noisy and pessimistic, and so is inference. The agent compares a few eval
forwards' output with their input per DropPath module: ``drop_path/eval_changed/<module>`` is the
share that changed it.
"""

from __future__ import annotations

from collections.abc import Iterable

from trickscope_server.services.health.model import Finding, NotApplicable, RunView, finding, rule
from trickscope_server.services.health.series import read_finite, with_prefix


@rule("drop-path-eval", "DropPath is the identity in eval mode")
def drop_path_eval(view: RunView) -> Iterable[Finding]:
    """The first DropPath module (model order) that changed its input on an eval forward."""
    modules = with_prefix(view, "drop_path/eval_changed/")
    if not modules:
        raise NotApplicable("no DropPath module was seen in eval mode")
    changed = []
    for module in modules:
        steps, shares = read_finite(view, f"drop_path/eval_changed/{module}")
        hit = shares > 0
        if hit.any():
            changed.append((module, int(steps[hit][0]), float(shares.max())))
    if not changed:
        return []
    module, step, share = changed[0]
    return [
        finding(
            "drop-path-in-eval",
            "error",
            f"DropPath {module} still drops in eval mode",
            why=f"In eval mode {module} changed its input on {100 * share:.0f}% of the forwards "
            "looked at: it zeroes or rescales residual branches at random where it must be the "
            "identity, so evaluation (and inference) runs a different, randomly thinned network "
            "each time.",
            remedy="Apply the drop only while training: return x when not self.training (or "
            "call drop_path(x, p, self.training)); timm's DropPath and torchvision's "
            "StochasticDepth do this.",
            step=step,
            layer=module,
            modules=[name for name, _, _ in changed[:20]],
            changed_share=share,
        )
    ]
