"""The first non-finite weight, gradient or loss: its layer and exact step."""

from __future__ import annotations

from collections.abc import Iterable

from trickscope_server.services.health.agent import agent_findings
from trickscope_server.services.health.model import Finding, NotApplicable, RunView, finding, rule
from trickscope_server.services.health.series import loss_names, per_layer

_KINDS = (("weight_norm", "weight"), ("grad_norm", "gradient"))  # weights first at equal steps


def _first_layer(view: RunView) -> Finding | None:
    """The first non-finite weight or gradient from the ingest summaries (no points read)."""
    firsts: list[tuple[int, int, int, str, str]] = []
    for kind_order, (stat, kind) in enumerate(_KINDS):
        for order, layer in enumerate(view.layers):
            summary = view.summaries.get(f"{stat}/{layer}")
            if summary is not None and summary.first_nonfinite_step is not None:
                firsts.append((summary.first_nonfinite_step, kind_order, order, layer, kind))
    if not firsts:
        return None
    step, _, _, layer, kind = min(firsts)
    others = sorted({name for s, _, _, name, _ in firsts if s == step and name != layer})
    also = f" ({len(others)} other layers at the same step)" if others else ""
    what = "weights" if kind == "weight" else "gradient"
    return finding(
        f"nonfinite-{kind}",
        "error",
        f"The {what} of {layer} became NaN/Inf at step {step}",
        why=f"The first non-finite {kind} in model order{also}, from the sampled per-layer norms. "
        "Everything downstream of it is poisoned from here on.",
        remedy="Try a lower learning rate or a warmup, gradient clipping, and check this layer's "
        "inputs (log of zero, division by zero, fp16 overflow: use bf16 or a GradScaler).",
        step=step,
        layer=layer,
        others=others[:10],
        series=f"{'weight_norm' if kind == 'weight' else 'grad_norm'}/{layer}",
    )


def _first_loss(view: RunView) -> Finding | None:
    for name in loss_names(view):
        step = view.summaries[name].first_nonfinite_step
        if step is not None:
            return finding(
                "nonfinite-loss",
                "error",
                f"{name} became NaN/Inf at step {step}",
                why="Training diverged, or a numerically unsafe operation produced NaN.",
                remedy="Look at the gradient and learning-rate charts just before this step; "
                "a lower learning rate, warmup or clipping usually prevents it.",
                step=step,
                series=name,
            )
    return None


@rule("nonfinite", "First non-finite weight, gradient or loss")
def nonfinite(view: RunView) -> Iterable[Finding]:
    """The agent's per-step check names the exact step when it ran; else the summaries do."""
    measured = any(f.check.startswith("nonfinite-") for f in agent_findings(view))
    has_norms = bool(per_layer(view, "grad_norm") or per_layer(view, "weight_norm"))
    if not measured and not has_norms and not loss_names(view):
        raise NotApplicable("no per-layer norms and no loss were recorded")
    found = []
    if not measured:  # the agent's finding is the answer: the sampled norms lag it
        layer = _first_layer(view)
        if layer is not None:
            found.append(layer)
    loss = _first_loss(view)
    if loss is not None:
        found.append(loss)
    return found
