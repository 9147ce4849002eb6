"""Gradient clipping on nearly every step: the threshold has become the step size."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from trickscope_server.services.health.model import Finding, NotApplicable, RunView, finding, rule
from trickscope_server.services.health.series import last, read_finite, tail

CLIPPED_SHARE_HIGH = 0.9  # clipped on more than this share of the last fifth of the run
PINNED_SHARE = 0.9  # share of tail samples of the total norm sitting at one constant ...
PINNED_TOLERANCE = 1e-4  # ... within this relative distance of their median
MIN_TAIL = 10  # samples needed before a share means anything

_REMEDY = "Raise the threshold to around the median pre-clip norm, so it catches outliers only."


def _measured(view: RunView) -> tuple[str, float] | None:
    for name in ("clip/observed", "clip/clipped"):
        if name in view.summaries:
            end = tail(*read_finite(view, name))
            if end.size:
                return name, float(end.mean())
    return None


@rule("clipping-always", "Gradient clipping on nearly every step")
def clipping(view: RunView) -> Iterable[Finding]:
    """Measured (clip/observed from the agent, clip/clipped from tricks.clip), else inferred from a
    post-clip total norm pinned at one constant."""
    threshold = last(view, "clip/threshold")
    at = f" at {threshold:g}" if threshold is not None else ""
    measured = _measured(view)
    if measured is not None:
        name, share = measured
        if share <= CLIPPED_SHARE_HIGH:
            return []
        return [
            finding(
                "clipping-always",
                "warning",
                f"Gradients are clipped on {100 * share:.0f}% of recent steps",
                why=f"The clipping threshold{at} is below the typical gradient norm, so it sets "
                "the step size instead of catching outliers.",
                remedy=_REMEDY,
                step=view.summaries[name].last_step,
                share=share,
                series=name,
                threshold=threshold,
                inferred=False,
            )
        ]
    end = tail(*read_finite(view, "grad_norm/total"))
    if end.size < MIN_TAIL:
        raise NotApplicable("no clipping was measured and too few total gradient norms to infer it")
    median = float(np.median(end))
    if median <= 0:
        return []
    share = float((np.abs(end - median) <= PINNED_TOLERANCE * median).mean())
    if share < PINNED_SHARE:
        return []
    return [
        finding(
            "clipping-always",
            "warning",
            f"The total gradient norm sits at {median:.4g} on {100 * share:.0f}% of recent steps "
            "(clipping inferred)",
            why="A norm measured after clipping that never moves from one value is the clipping "
            "threshold: gradients are clipped on nearly every step, so the threshold sets the "
            "step size instead of catching outliers. Inferred from the norm, not measured.",
            remedy=_REMEDY,
            step=view.summaries["grad_norm/total"].last_step,
            share=share,
            pinned_norm=median,
            series="grad_norm/total",
            inferred=True,
        )
    ]
