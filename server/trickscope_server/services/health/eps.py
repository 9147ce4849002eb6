"""Adam's eps larger than √v̂ on most of a layer: there Adam degrades to momentum SGD."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from trickscope_server.services.health.model import Finding, NotApplicable, RunView, finding, rule
from trickscope_server.services.health.series import read_finite, with_prefix

EPS_DOMINANCE_HIGH = 0.5  # median share of elements with eps > √v̂
PREFIX = "opt/eps_dominance/"


@rule("eps-dominates", "Adam's eps against √v̂")
def eps_dominates(view: RunView) -> Iterable[Finding]:
    """Layers whose median share of elements with eps > √v̂ exceeds EPS_DOMINANCE_HIGH."""
    layers = with_prefix(view, PREFIX)
    if not layers:
        raise NotApplicable("no eps dominance was measured (Adam family, due steps)")
    heavy = []
    for layer in layers:
        steps, values = read_finite(view, PREFIX + layer)
        if values.size:
            median = float(np.median(values))
            if median > EPS_DOMINANCE_HIGH:
                heavy.append((median, layer, int(steps[-1])))
    if not heavy:
        return []
    fraction, layer, step = max(heavy)
    return [
        finding(
            "eps-dominates",
            "warning",
            f"Adam's eps dominates √v̂ in {len(heavy)} layer(s)",
            why=f"In {layer}, a median {100 * fraction:.0f}% of elements have eps > √v̂: there "
            "Adam degrades to momentum SGD with a tiny step.",
            remedy="Lower eps (e.g. 1e-8, or 1e-6 under bf16), or look for very small gradients "
            "in these layers.",
            step=step,
            layer=layer,
            median_share=fraction,
            layers=[name for _, name, _ in sorted(heavy, reverse=True)][:20],
        )
    ]
