"""Gradient norms: jumps far above recent samples, vanishing norms, norms that never arrive."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from trickscope_server.services.health import setup_doc
from trickscope_server.services.health.model import Finding, NotApplicable, RunView, finding, rule
from trickscope_server.services.health.series import WINDOW, per_layer, tail, trailing_median

EXPLODING_FACTOR = 100.0  # a jump this far above the median of the previous samples
MIN_HISTORY = 3  # previous samples a jump is measured against: fires on short runs too
NORM_FLOOR = 1e-7  # below this a norm carries no signal: no jump is measured from it
VANISHING_NORM = 1e-7  # a gradient norm this small carries no signal in float32 training
DEPTH_SPREAD = 1e-4  # smallest / largest layer gradient norm below this: vanishing with depth
TOTALS = ("grad_norm/total", "grad_norm/total_preclip")


def first_jump(view: RunView, name: str) -> tuple[int, float, float, float] | None:
    """(step, factor, value, baseline) of the first sample far above its previous samples."""
    steps, values = view.series(name)
    ok = values[np.isfinite(values)]
    # A baseline is a median of the series' own values above NORM_FLOOR: a series whose maximum
    # is within the factor of that bound cannot jump, and most healthy ones end here.
    if ok.size <= MIN_HISTORY or ok.max() <= EXPLODING_FACTOR * max(ok.min(), NORM_FLOOR):
        return None
    baseline = trailing_median(values, window=WINDOW, min_history=MIN_HISTORY)
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = values / baseline
    hits = np.flatnonzero(
        (baseline > NORM_FLOOR) & np.isfinite(values) & (factor > EXPLODING_FACTOR)
    )
    if not hits.size:
        return None
    i = int(hits[0])
    return int(steps[i]), float(factor[i]), float(values[i]), float(baseline[i])


@rule("exploding-gradient", "Gradient norms jumping far above their recent samples")
def exploding(view: RunView) -> Iterable[Finding]:
    """Per layer and in total, the first sample above EXPLODING_FACTOR × the median of up to
    WINDOW previous samples (at least MIN_HISTORY of them)."""
    layers = per_layer(view, "grad_norm")
    names = [f"grad_norm/{layer}" for layer in layers] + [t for t in TOTALS if t in view.summaries]
    if not names:
        raise NotApplicable("no gradient norms were recorded")
    candidates = []
    for order, name in enumerate(names):
        jump = first_jump(view, name)
        if jump is not None:
            candidates.append((jump[0], order, name, jump))
    if not candidates:
        return []
    step, _, name, (_, factor, value, baseline) = min(candidates)
    layer = name.partition("/")[2] if name not in TOTALS else None
    where = f"of {layer}" if layer else f"({name})"
    others = [n for _, _, n, _ in sorted(candidates)[1:]]
    return [
        finding(
            "exploding-gradient",
            "warning",
            f"Gradient norm {where} jumped {factor:,.0f}× at step {step}",
            why=f"The norm reached {value:.3g} against a median of {baseline:.3g} over the "
            f"previous up to {WINDOW} samples (threshold {EXPLODING_FACTOR:g}×). One such step "
            "can undo much of the training so far.",
            remedy="Gradient clipping bounds the damage; a lower learning rate or a longer warmup "
            "removes the cause.",
            step=step,
            layer=layer,
            series=name,
            value=value,
            baseline=baseline,
            factor=factor,
            later=others[:10],
        )
    ]


@rule("vanishing-gradient", "Vanishing gradients and norms spread over orders of magnitude")
def vanishing(view: RunView) -> Iterable[Finding]:
    """Layers with tiny gradients at the end, or gradients spanning orders of magnitude."""
    layers = per_layer(view, "grad_norm")
    if not layers:
        raise NotApplicable("no per-layer gradient norms were recorded")
    medians: dict[str, float] = {}
    for layer in layers:
        end = tail(*view.series(f"grad_norm/{layer}"))
        if end.size:
            medians[layer] = float(np.median(end))
    for bias in _cancelled_biases(medians):
        del medians[bias]
    found = []
    tiny = [layer for layer, m in medians.items() if 0 < m < VANISHING_NORM]
    if tiny:
        found.append(
            finding(
                "vanishing-gradient",
                "warning",
                f"{len(tiny)} layer(s) have gradient norms below {VANISHING_NORM:g}",
                why="Near the end of the run their gradients carry almost no signal: "
                f"{', '.join(tiny[:5])}{' …' if len(tiny) > 5 else ''}.",
                remedy="Check initialisation, saturating activations and missing normalisation "
                "or residual connections.",
                layer=tiny[0],
                layers=tiny[:20],
                medians={layer: medians[layer] for layer in tiny[:20]},
            )
        )
    positive = {layer: m for layer, m in medians.items() if m > 0}
    if len(positive) >= 2:
        low = min(positive, key=positive.__getitem__)
        high = max(positive, key=positive.__getitem__)
        spread = positive[low] / positive[high]
        if spread < DEPTH_SPREAD:
            found.append(
                finding(
                    "gradient-spread",
                    "warning",
                    f"Gradient norms span {-math.log10(spread):.0f} orders of magnitude",
                    why=f"{low} gets {positive[low]:.2e}, {high} gets {positive[high]:.2e}: one "
                    "learning rate cannot suit both.",
                    remedy="Look for vanishing gradients with depth (initialisation, "
                    "normalisation, residual connections).",
                    layer=low,
                    low=positive[low],
                    high=positive[high],
                    high_layer=high,
                )
            )
    return found


def _cancelled_biases(medians: dict[str, float]) -> list[str]:
    """Biases whose gradient is orders of magnitude below their own layer's weights' (which
    are not vanishing): a bias right before BatchNorm is cancelled by its mean subtraction, so
    its gradient is float noise by construction, not a sign of vanishing gradients."""
    found = []
    for layer, median in medians.items():
        if not layer.endswith(".bias"):
            continue
        weight = medians.get(layer.removesuffix(".bias") + ".weight")
        if weight is not None and weight >= VANISHING_NORM and median < DEPTH_SPREAD * weight:
            found.append(layer)
    return found


def _listed(names: list[str]) -> str:
    return f"{', '.join(names[:3])}{f' and {len(names) - 3} more' if len(names) > 3 else ''}"


@rule("no-gradient", "Trainable parameters that never get a gradient")
def no_gradient(view: RunView) -> Iterable[Finding]:
    """Parameters in the optimizer without a gradient (warning), frozen ones (info)."""
    with_grad = set(per_layer(view, "grad_norm"))
    if not with_grad:
        raise NotApplicable("no per-layer gradient norms were recorded")
    params = setup_doc.params(view)
    found = []
    if params:
        names = [p for p in params if isinstance(p.get("name"), str)]
        missing = [
            str(p["name"])
            for p in names
            if p.get("requires_grad") is True and p.get("group") is not None
        ]
        missing = [name for name in missing if name not in with_grad]
        frozen = [str(p["name"]) for p in names if p.get("requires_grad") is False]
    else:  # no setup: a declared layer without a gradient is frozen or disconnected
        missing, frozen = [], [layer for layer in view.layers if layer not in with_grad]
    if missing:
        found.append(
            finding(
                "no-gradient",
                "warning",
                f"{len(missing)} trainable parameter(s) never got a gradient: {_listed(missing)}",
                why="They require a gradient and the optimizer holds them, but backward never "
                "reaches them: an unused module, a branch cut off with detach() or no_grad, or "
                "an output left out of the loss. They keep their initial values.",
                remedy="Connect them to the loss, or remove them from the model and the optimizer "
                "(DDP also needs find_unused_parameters for them).",
                layer=missing[0],
                params=missing[:50],
                count=len(missing),
            )
        )
    if frozen:
        found.append(
            finding(
                "no-gradient",
                "info",
                f"{len(frozen)} parameter(s) are frozen: {_listed(frozen)}",
                why="They get no gradient (frozen on purpose, or not connected to the loss); they "
                "are shown as frozen, not dead.",
                remedy="Nothing to do when freezing was meant (fine-tuning, a frozen backbone).",
                layer=frozen[0],
                params=frozen[:50],
                count=len(frozen),
                frozen=True,
            )
        )
    return found
