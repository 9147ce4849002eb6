"""Update-to-weight ratio ‖Δw‖/‖w‖ persistently outside ~1e-5 … 1e-1 (CS231n; Karpathy)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from trickscope_server.services.health.model import Finding, NotApplicable, RunView, finding, rule
from trickscope_server.services.health.series import per_layer

# The band the rule judges by and the run page shades: a layer whose median ratio lies outside it
# takes steps too small or too large for its weights (TRICKS.md; CS231n, Karpathy), and the rule of
# thumb inside it. health_report() sends both, so the chart and the rule cannot disagree.
UPDATE_RATIO_BAND = (1e-5, 1e-1)
UPDATE_RATIO_TYPICAL = 1e-3


def update_ratio_band() -> dict[str, float]:
    """The update-ratio band as the health report sends it: ``{low, high, typical}``."""
    low, high = UPDATE_RATIO_BAND
    return {"low": low, "high": high, "typical": UPDATE_RATIO_TYPICAL}


@rule("update-ratio", "Update-to-weight ratio per layer")
def update_ratio(view: RunView) -> Iterable[Finding]:
    """‖Δw‖/‖w‖ outside the band over the run (median; rule of thumb: around 1e-3)."""
    layers = per_layer(view, "update_ratio")
    if not layers:
        raise NotApplicable("no update ratios (update_ratio) were recorded")
    low_band, high_band = UPDATE_RATIO_BAND
    high: list[tuple[float, str]] = []
    low: list[tuple[float, str]] = []
    for layer in layers:
        # The whole run, not its tail: a decayed LR shrinks every update at the end, as meant.
        _, values = view.series(f"update_ratio/{layer}")
        values = values[np.isfinite(values)]
        if not values.size:
            continue
        median = float(np.median(values))
        if median > high_band:
            high.append((median, layer))
        elif 0 < median < low_band:
            low.append((median, layer))
    found = []
    if high:
        ratio, layer = max(high)
        found.append(
            finding(
                "update-ratio-high",
                "warning",
                f"Updates are large relative to weights in {len(high)} layer(s)",
                why=f"{layer} changes by {ratio:.1e} of its norm per step (rule of thumb: about "
                f"{UPDATE_RATIO_TYPICAL:.0e}; CS231n). Weights this volatile rarely settle.",
                remedy="Lower the learning rate (or this layer's, with a param group).",
                layer=layer,
                median_ratio=ratio,
                band=list(UPDATE_RATIO_BAND),
                layers=[name for _, name in sorted(high, reverse=True)][:20],
            )
        )
    if low:
        ratio, layer = min(low)
        found.append(
            finding(
                "update-ratio-low",
                "info",
                f"Updates are tiny relative to weights in {len(low)} layer(s)",
                why=f"{layer} changes by {ratio:.1e} of its norm per step (rule of thumb: about "
                f"{UPDATE_RATIO_TYPICAL:.0e}). These layers barely learn.",
                remedy="The learning rate may be too low for them, or weight decay and the "
                "gradient cancel.",
                layer=layer,
                median_ratio=ratio,
                band=list(UPDATE_RATIO_BAND),
                layers=[name for _, name in sorted(low)][:20],
            )
        )
    return found
