"""Gradient clipping on nearly every step (the threshold has become the step size), never (the
threshold is above every norm), or before ``GradScaler.unscale_`` (the norm compared with the
threshold carries the loss scale)."""

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
    before_unscale = _before_unscale_share(view)
    if before_unscale is not None and before_unscale[0] >= BEFORE_UNSCALE_SHARE:
        return []  # the cause is the order, not the threshold: clip-before-unscale names it
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


NEVER_MARGIN = 100.0  # max_norm this many times the largest pre-clip norm: no norm comes near
NEVER_MIN_STEPS = 100  # measured steps before "never" means anything
BEFORE_UNSCALE_SHARE = 0.5  # of the steps whose coefficient decided it


def _before_unscale_share(view: RunView) -> tuple[float, int, int] | None:
    """(share of decided steps clipped against the loss-scaled norm, decided steps, first such
    step) from ``clip/before_unscale``; ``None`` without the series."""
    steps, values = read_finite(view, "clip/before_unscale")
    if not values.size:
        return None
    scaled = values > 0.5
    first = int(steps[scaled][0]) if scaled.any() else -1
    return float(scaled.mean()), int(values.size), first


@rule("clip-before-unscale", "Gradients clipped before GradScaler.unscale_")
def clip_before_unscale(view: RunView) -> Iterable[Finding]:
    """The agent compares the measured clip coefficient with the two ``clip_grad_norm_`` could
    have applied, against the unscaled and the loss-scaled norm (``clip/before_unscale``)."""
    measured = _before_unscale_share(view)
    if measured is None:
        raise NotApplicable(
            "no clip_grad_norm_ call with a known threshold ran under a GradScaler whose "
            "scale was above 1"
        )
    share, decided, first = measured
    if share < BEFORE_UNSCALE_SHARE:
        return []
    threshold = last(view, "clip/threshold")
    scale = last(view, "amp/scale")
    to = ""
    if threshold is not None and scale:
        to = f" (about {threshold / scale:.3g} instead of {threshold:g})"
    return [
        finding(
            "clip-before-unscale",
            "error",
            f"clip_grad_norm_ compared the loss-scaled gradient norm with max_norm on "
            f"{100 * share:.0f}% of {decided} measured steps",
            why="Under a GradScaler the gradients stay multiplied by the loss scale"
            + (f" ({scale:g})" if scale else "")
            + " until scaler.unscale_: clipped before it, the norm compared with max_norm is "
            "the scaled one, so clipping cuts every step to max_norm divided by the scale"
            f"{to}, or a threshold large enough to pass the scaled norm means nothing. This "
            "is also why clipping acts on nearly every step: clipping-always defers to this "
            "finding.",
            remedy="Call scaler.unscale_(optimizer) after backward and before clip_grad_norm_, "
            "then scaler.step(optimizer) and scaler.update() as before (scaler.step does not "
            "unscale twice).",
            step=first,
            share=share,
            decided_steps=decided,
            threshold=threshold,
            scale=scale,
        )
    ]


def _largest_preclip(view: RunView) -> tuple[str, float, float] | None:
    """(series, largest, median) of the pre-clip norms; a norm never clipped is its own
    pre-clip norm, so the total serves where no pre-clip series came."""
    for name in ("grad_norm/total_preclip", "clip/pre_norm", "grad_norm/total"):
        values = read_finite(view, name)[1]
        if values.size:
            return name, float(values.max()), float(np.median(values))
    return None


@rule("clipping-never", "Gradient clipping that never acts")
def clipping_never(view: RunView) -> Iterable[Finding]:
    """Info, not a warning: a clip that never acts leaves the training exactly as it would be
    without it, so nothing in this run is wrong; what is missing is the protection the call was
    written for. A safety net a few times above the typical norm also rarely acts, which is why
    this asks for a threshold :data:`NEVER_MARGIN` times the largest pre-clip norm seen, over at
    least :data:`NEVER_MIN_STEPS` measured steps."""
    threshold = last(view, "clip/threshold")
    if threshold is None:
        raise NotApplicable("no clipping threshold was reported (clip_grad_norm_ not seen)")
    name = next((n for n in ("clip/observed", "clip/clipped") if n in view.summaries), None)
    if name is None:
        raise NotApplicable("whether clipping acted was not measured")
    steps, clipped = read_finite(view, name)
    if clipped.size < NEVER_MIN_STEPS:
        raise NotApplicable(
            f"clipping was measured on {clipped.size} steps, fewer than {NEVER_MIN_STEPS}"
        )
    if (clipped > 0).any():
        return []
    norms = _largest_preclip(view)
    if norms is None:
        raise NotApplicable("no pre-clip gradient norm to compare the threshold with")
    series, largest, median = norms
    if not (largest > 0 and threshold >= NEVER_MARGIN * largest):
        return []
    return [
        finding(
            "clipping-never",
            "info",
            f"Gradient clipping never acted in {clipped.size} steps: max_norm {threshold:g} is "
            f"{threshold / largest:,.0f}x the largest pre-clip norm ({largest:.3g})",
            why=f"clip_grad_norm_ runs on every step, but its threshold is far above every "
            f"gradient norm this run had (median {median:.3g}, largest {largest:.3g}), so it "
            "never changes a gradient: a spike it was meant to catch would have to be "
            f"{threshold / largest:,.0f} times the largest norm so far.",
            remedy=f"Set max_norm to a small multiple of the typical pre-clip norm (around "
            f"{median:.3g} here; 1-5x catches outliers only), or drop the call if no clipping "
            "is wanted.",
            step=int(steps[-1]),
            threshold=threshold,
            largest_preclip=largest,
            median_preclip=median,
            measured_steps=int(clipped.size),
            series=series,
        )
    ]
