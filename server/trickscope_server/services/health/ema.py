"""EMA of weights: a horizon longer than the run, an average never updated, BatchNorm statistics
frozen at the EMA's creation, an EMA that evaluates worse than the raw model at the end."""

from __future__ import annotations

import re
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
from trickscope_server.services.health.series import last, per_layer, read_finite

EMA_WORSE_MARGIN = 0.005  # relative: EMA may trail raw by this share before we say so
EMA_WORSE_LOSS_MARGIN = 0.05  # a loss near zero moves by percents between evaluations
MIN_SAMPLES = 3
_LOWER_IS_BETTER = ("loss", "err", "ppl", "perplexity", "nll", "wer", "cer")
_SEP = re.compile(r"([/_.\-])")


def _decay(view: RunView) -> float | None:
    ema = setup_doc.section(view, "ema")
    decay = setup_doc.number(ema.get("decay")) if ema else None
    if decay is None:
        decay = last(view, "ema/decay")
    return decay if decay is not None and 0 < decay < 1 else None


def _realised_steps(view: RunView) -> int:
    return max((s.last_step for s in view.summaries.values() if s.last_step is not None), default=0)


def pairs(view: RunView) -> list[tuple[str, str]]:
    """(ema series, raw series): names that differ by an ``ema`` token (``ema`` ↔ ``raw`` or
    nothing), e.g. eval/acc_ema ↔ eval/acc_raw, val/acc_ema ↔ val/acc, acc/ema ↔ acc/raw."""
    found = []
    for name in view.summaries:
        if name.startswith("ema/"):
            continue  # the agent's own EMA measurements, not evaluations
        parts = _SEP.split(name)
        for i, part in enumerate(parts):
            if part.lower() != "ema":
                continue
            candidates = [
                "".join(parts[:i] + ["raw"] + parts[i + 1 :]),
                # The token dropped with the separator before or after it: acc_ema -> acc.
                "".join(parts[: max(0, i - 1)] + parts[i + 1 :]) if i else "",
                "".join(parts[:i] + parts[i + 2 :]),
            ]
            partner = next((c for c in candidates if c and c in view.summaries), None)
            if partner is not None:
                found.append((name, partner))
                break
    return sorted(found)


def _horizon(view: RunView, decay: float) -> Finding | None:
    horizon = 1 / (1 - decay)
    planned = setup_doc.planned_steps(view)
    if planned is None and view.status == "running":
        return None  # the realised length is not the run's length yet
    length, which = (planned, "planned") if planned else (_realised_steps(view), "realised")
    if not length or horizon <= length / 2:
        return None
    severity: Severity = "warning" if horizon > length else "info"
    return finding(
        "ema-horizon",
        severity,
        f"EMA horizon of ~{horizon:,.0f} steps is long for a {length}-step run ({which})",
        why=f"With decay {decay:g} the average spans 1/(1−decay) ≈ {horizon:,.0f} steps, so at "
        "the end it still weights early (or initial) weights heavily.",
        remedy=f"Lower the decay to about {1 - 10 / length:.4g} (a horizon of a tenth of the "
        "run), or use a decay warm-up (timm ModelEmaV3).",
        step=length if which == "realised" else None,
        decay=decay,
        horizon=horizon,
        run_steps=length,
        length_source=which,
    )


def _not_updated(view: RunView) -> Finding | None:
    _, updates = read_finite(view, "ema/updates")
    if updates.size >= MIN_SAMPLES and updates[-1] <= updates[0]:
        frozen_by = "its update count stays at " + f"{updates[-1]:g}"
    else:
        steps, norms = read_finite(view, "ema/norm")
        if norms.size < MIN_SAMPLES or norms.max() != norms.min():
            return None
        moving = [
            layer
            for layer in per_layer(view, "weight_norm")
            if (w := read_finite(view, f"weight_norm/{layer}")[1]).size >= 2 and w.max() != w.min()
        ]
        if not moving:
            return None
        frozen_by = f"its weight norm stays at {norms[0]:.6g} while the model's weights change"
    return finding(
        "ema-not-updated",
        "warning",
        "The EMA model is never updated",
        why=f"{frozen_by.capitalize()}: it is still the model it was created from, so evaluating "
        "it measures the initial weights.",
        remedy="Call ema.update(model) (or update_parameters) after every optimizer.step().",
    )


def _stale_statistics(view: RunView) -> Finding | None:
    """The EMA's BatchNorm running statistics never move while the model's do: only parameters
    are averaged, so the averaged weights are evaluated with the statistics of step 0."""
    steps, shadow = read_finite(view, "ema/bn_stats_norm")
    _, model = read_finite(view, "bn_stats_norm")
    if shadow.size < MIN_SAMPLES or model.size < MIN_SAMPLES:
        return None
    if shadow.max() != shadow.min() or model.max() == model.min():
        return None
    return finding(
        "ema-stale-batchnorm",
        "warning",
        "The EMA model's BatchNorm statistics never change",
        why=f"Its running means and variances keep the values they had when it was created "
        f"(norm {shadow[0]:.6g} at every sample, while the model's moved from {model[0]:.6g} to "
        f"{model[-1]:.6g}): the averaged weights are evaluated with statistics of other weights, "
        "which can make the EMA look far worse than it is.",
        remedy="Average or copy the buffers too (AveragedModel(use_buffers=True), timm "
        "ModelEmaV3, tricks.ModelEma), or run torch.optim.swa_utils.update_bn before evaluating.",
        step=int(steps[-1]),
        ema_stats_norm=float(shadow[0]),
        model_stats_norm=float(model[-1]),
    )


def _worse(view: RunView) -> Finding | None:
    if view.status == "running":
        return None  # at the end means at the end
    found = pairs(view)
    # An accuracy is what an EMA is kept for; where one is compared, a loss (which an EMA can
    # trail at equal accuracy, its logits being smoother) does not decide.
    accuracies = [p for p in found if not any(w in p[0].lower() for w in _LOWER_IS_BETTER)]
    for ema_name, raw_name in accuracies or found:
        averaged, raw = last(view, ema_name), last(view, raw_name)
        if averaged is None or raw is None or not np.isfinite([averaged, raw]).all():
            continue
        lower = any(w in ema_name.lower() for w in _LOWER_IS_BETTER)
        gap = (raw - averaged) if not lower else (averaged - raw)
        margin = EMA_WORSE_LOSS_MARGIN if lower else EMA_WORSE_MARGIN
        if gap > margin * max(abs(raw), 1e-12):
            return finding(
                "ema-worse",
                "warning",
                f"EMA's {ema_name} {averaged:.4g} is worse than the raw model's {raw:.4g} at "
                "the end",
                why="The average still remembers early weights (decay too close to 1 for this "
                "run length), or BatchNorm statistics are stale for the averaged weights.",
                remedy="Shorten the horizon (lower decay), or average (or recompute) the buffers.",
                step=view.summaries[ema_name].last_step,
                ema_series=ema_name,
                raw_series=raw_name,
                ema=averaged,
                raw=raw,
            )
    return None


@rule("ema", "EMA of weights")
def ema(view: RunView) -> Iterable[Finding]:
    """The horizon against the run, whether the average moves, and EMA against raw at the end."""
    seen = setup_doc.section(view, "ema") is not None or any(
        n.startswith("ema/") for n in view.summaries
    )
    if not seen and not pairs(view):
        raise NotApplicable("no EMA model was seen")
    decay = _decay(view)
    not_updated = _not_updated(view)
    found = [
        _horizon(view, decay) if decay is not None else None,
        not_updated,
        _stale_statistics(view) if not_updated is None else None,  # that one says it all
        _worse(view),
    ]
    return [f for f in found if f is not None]
