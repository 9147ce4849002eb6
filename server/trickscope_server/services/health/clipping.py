"""Gradient clipping on nearly every step: the threshold has become the step size."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from trickscope_server.services.health import setup_doc
from trickscope_server.services.health.model import (
    Finding,
    NotApplicable,
    RunView,
    Severity,
    finding,
    rule,
)
from trickscope_server.services.health.series import last, read_finite, tail

CLIPPED_SHARE_HIGH = 0.9  # clipped on more than this share of the last fifth of the run
PINNED_SHARE = 0.9  # share of tail samples of the total norm sitting at one constant ...
PINNED_TOLERANCE = 1e-4  # ... within this relative distance of their median
MIN_TAIL = 10  # samples needed before a share means anything
FAR_BELOW = 5.0  # a typical pre-clip norm this many times the threshold: far too low for anyone

_REMEDY = "Raise the threshold to around the median pre-clip norm, so it catches outliers only."


def _remedy(view: RunView) -> str:
    """The remedy, with AMP's ordering first where a GradScaler scales the loss: gradients
    clipped before ``scaler.unscale_`` are the scaled ones, clipped on every step."""
    scaler = setup_doc.section(view, "scaler")
    if scaler and scaler.get("enabled") is not False:
        return (
            "With a GradScaler, call scaler.unscale_(optimizer) before clip_grad_norm_: "
            "clipping the scaled gradients clips on every step. Otherwise: " + _REMEDY
        )
    return _REMEDY


def _measured(view: RunView) -> tuple[str, float] | None:
    for name in ("clip/observed", "clip/clipped"):
        if name in view.summaries:
            end = tail(*read_finite(view, name))
            if end.size:
                return name, float(end.mean())
    return None


def _severity(view: RunView, threshold: float | None) -> tuple[Severity, float | None]:
    """Warning where clipping changes the training: under SGD it rescales every step, and under
    any optimizer a threshold far below the typical pre-clip norm leaves no gradient scale at all.
    Adam-family steps are nearly invariant to one factor on all gradients, so a threshold a little
    below the norm (nanoGPT's 1.0 on a small model) is worth knowing, not a mistake."""
    ratio = None
    end = tail(*read_finite(view, "grad_norm/total_preclip"))
    if threshold is None:
        threshold = last(view, "clip/threshold")
    pinned = tail(*read_finite(view, "grad_norm/total"))
    if threshold is None and pinned.size:
        threshold = float(np.median(pinned))  # clipped nearly always: the post-clip norm is it
    if end.size and threshold and threshold > 0:
        ratio = float(np.median(end)) / threshold
    if ratio is not None and ratio > FAR_BELOW:
        return "warning", ratio
    return ("info" if setup_doc.family(view) == "adam" else "warning"), ratio


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
        severity, ratio = _severity(view, threshold)
        return [
            finding(
                "clipping-always",
                severity,
                f"Gradients are clipped on {100 * share:.0f}% of recent steps",
                why=f"The clipping threshold{at} is below the typical gradient norm, so it sets "
                "the step size instead of catching outliers.",
                remedy=_remedy(view),
                step=view.summaries[name].last_step,
                share=share,
                series=name,
                threshold=threshold,
                preclip_over_threshold=ratio,
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
    severity, _ = _severity(view, median)
    return [
        finding(
            "clipping-always",
            severity,
            f"The total gradient norm sits at {median:.4g} on {100 * share:.0f}% of recent steps "
            "(clipping inferred)",
            why="A norm measured after clipping that never moves from one value is the clipping "
            "threshold: gradients are clipped on nearly every step, so the threshold sets the "
            "step size instead of catching outliers. Inferred from the norm, not measured.",
            remedy=_remedy(view),
            step=view.summaries["grad_norm/total"].last_step,
            share=share,
            pinned_norm=median,
            series="grad_norm/total",
            inferred=True,
        )
    ]
