"""Gradient accumulation whose loss is not divided by the number of micro-batches, and
gradients accumulated across optimizer steps because zero_grad is never called.

The agent measures the per-sample scale of ∂loss/∂logits × micro-batch size for a softmax
cross-entropy output: ≈1 for a mean-reduced loss, ≈1/N when the loss is divided by N
accumulation steps. Undivided, every step is N times too large.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from trickscope_server.services.health import setup_doc
from trickscope_server.services.health.model import Finding, NotApplicable, RunView, finding, rule
from trickscope_server.services.health.series import flagged, read_finite

NORM_GROWTH_CORRELATION = 0.8  # log grad norm against log pass count, when the count varies
NORM_GROWTH_SLOPE = (0.7, 1.3)  # ... with a slope near 1: the norm grows ∝ N
MIN_SAMPLES = 3
CARRIED_SHARE = 0.5  # gradients carried into at least this share of the measured steps


@rule("accumulation", "Loss divided by the number of accumulation steps")
def accumulation(view: RunView) -> Iterable[Finding]:
    """Several backward passes per step while one micro-batch's loss scale is ≈1, not ≈1/N (or
    the total gradient norm grows in proportion to the pass count)."""
    pass_steps, passes = read_finite(view, "accum/backward_passes")
    if passes.size < MIN_SAMPLES:
        raise NotApplicable("backward passes per optimizer step were not measured")
    n = float(np.median(passes))
    if n <= 1 and passes.max() <= 1:
        declared = setup_doc.declared_accumulation(view)
        if declared is not None and declared > 1:
            return [
                finding(
                    "accumulation-not-applied",
                    "warning",
                    f"The config accumulates {declared} micro-batches, but every step has one",
                    why=f"It declares {declared} micro-batches per optimizer step, yet each step "
                    "followed a single backward pass: the optimizer steps on every micro-batch, "
                    f"with a batch {declared}× smaller (and, if the loss is divided by "
                    f"{declared}, a learning rate {declared}× smaller) than planned.",
                    remedy=f"Call optimizer.step() and zero_grad() once every {declared} "
                    "backward passes, or set the accumulation to 1.",
                    step=int(pass_steps[0]),
                    declared=declared,
                    backward_passes=n,
                )
            ]
        raise NotApplicable("one backward pass per optimizer step: no accumulation")
    _, scales = read_finite(view, "accum/loss_scale")
    scales = scales[scales > 0]
    if scales.size >= MIN_SAMPLES and n > 1:
        scale = float(np.median(scales))
        # Compare in log space: 1 and 1/N are the two readings, noise is multiplicative.
        if abs(math.log(scale)) < abs(math.log(scale * n)):
            return [
                finding(
                    "accumulation-loss-not-divided",
                    "warning",
                    f"The loss is not divided by {n:g} accumulation steps",
                    why=f"Each optimizer step sums {n:g} backward passes, but one micro-batch's "
                    f"loss scale is {scale:.3g} (≈1, not ≈1/{n:g}): the summed gradient, and so "
                    f"the step, is {n:g}× what a single large batch would give.",
                    remedy=f"Divide the loss by {n:g} before backward(), or lower the learning "
                    "rate by the same factor.",
                    step=int(pass_steps[0]),
                    backward_passes=n,
                    loss_scale=scale,
                )
            ]
        return []
    if passes.max() == passes.min():
        raise NotApplicable("no loss scale was measurable (not a softmax cross-entropy output)")
    grow = _norm_growth(view, pass_steps, passes)
    if grow is None:
        return []
    return [
        finding(
            "accumulation-loss-not-divided",
            "warning",
            "The gradient norm grows in proportion to the accumulation count",
            why=f"Across steps with different numbers of backward passes, the total gradient "
            f"norm scales as N^{grow:.2f}: summed, not averaged, micro-batch gradients.",
            remedy="Divide each micro-batch's loss by the number of micro-batches in the step.",
            step=int(pass_steps[0]),
            slope=grow,
        )
    ]


def _norm_growth(view: RunView, pass_steps: np.ndarray, passes: np.ndarray) -> float | None:
    """The slope of log norm against log passes when it is near 1 and well correlated."""
    norm_steps, norms = read_finite(view, "grad_norm/total")
    common, at_p, at_n = np.intersect1d(pass_steps, norm_steps, return_indices=True)
    p, g = passes[at_p], norms[at_n]
    keep = (p > 0) & (g > 0)
    if keep.sum() < 2 * MIN_SAMPLES or np.unique(p[keep]).size < 2:
        return None
    x, y = np.log(p[keep]), np.log(g[keep])
    corr = float(np.corrcoef(x, y)[0, 1])
    slope = float(np.polyfit(x, y, 1)[0])
    low, high = NORM_GROWTH_SLOPE
    if corr < NORM_GROWTH_CORRELATION or not low <= slope <= high:
        return None
    return slope


@rule("gradients-not-zeroed", "Gradients cleared between optimizer steps")
def gradients_not_zeroed(view: RunView) -> Iterable[Finding]:
    """The step's first backward finds the previous step's gradient still there on most steps:
    ``zero_grad`` is missing, so every step applies the sum of all gradients so far."""
    carried = flagged(
        view,
        "grad/carried_over",
        MIN_SAMPLES,
        "whether gradients carry over between steps was not measured",
    )
    if carried is None or carried[0] < CARRIED_SHARE:
        return []
    share, first = carried
    return [
        finding(
            "gradients-not-zeroed",
            "error",
            "Gradients are not cleared between optimizer steps",
            why=f"On {100 * share:.0f} % of the measured steps, from step {first}, the first "
            "backward pass added to the previous step's gradient instead of a cleared one: "
            "each step applies the sum of every gradient so far, a step that keeps growing.",
            remedy="Call optimizer.zero_grad() once per optimizer step (after step(), or "
            "before the first backward of the next one).",
            step=first,
            share=share,
        )
    ]
