"""Weights initialised far from the scale that keeps activations steady through depth.

A layer with ``fan_in`` inputs keeps its activations' size when its weights' standard deviation
is about ``gain / √fan_in`` with a gain near 1: He (√2 for ReLU), Glorot, PyTorch's default
(1/√3) and the 0.02 of transformers all give gains between ~0.1 and ~1.5. Weights drawn with
``std = 1`` (``torch.randn``, ``nn.init.normal_`` left at its default) give a gain of √fan_in:
activations grow by that factor at every layer. The first sample of each layer's weight std
(step 0 at the default attach) is compared with that, from the shapes the setup declares.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from trickscope_server.services.health import setup_doc
from trickscope_server.services.health.model import Finding, NotApplicable, RunView, finding, rule
from trickscope_server.services.health.series import read_finite

LARGE_GAIN = 4.0  # std × √fan_in above this: activations grow layer by layer
SMALL_GAIN = 0.03  # below this (and not zero) on most layers: the signal fades with depth
MIN_LAYERS = 3  # layers needed before a small scale is said to be systematic
_MODULES = ("Linear", "Conv1d", "Conv2d", "Conv3d", "LazyLinear")


def _gains(view: RunView) -> list[tuple[str, float, int]]:
    """(layer, first weight std × √fan_in, step) for the weight matrices and kernels."""
    found = []
    for param in setup_doc.params(view):
        name, shape = param.get("name"), param.get("shape")
        if param.get("kind") != "weight" or param.get("module") not in _MODULES:
            continue
        if not isinstance(name, str) or not isinstance(shape, list) or len(shape) < 2:
            continue
        if f"weight_std/{name}" not in view.summaries:
            continue
        fan_in = math.prod(int(d) for d in shape[1:])
        steps, stds = read_finite(view, f"weight_std/{name}")
        if fan_in > 0 and stds.size:
            found.append((name, float(stds[0]) * math.sqrt(fan_in), int(steps[0])))
    return found


@rule("init-scale", "Initial weight scale against the layers' fan-in")
def init_scale(view: RunView) -> Iterable[Finding]:
    """Layers whose first weight std × √fan_in is far above LARGE_GAIN, or most layers far
    below SMALL_GAIN."""
    gains = _gains(view)
    if not gains:
        raise NotApplicable("no weight std of a Linear or Conv layer with a declared shape")
    large = [(layer, gain, step) for layer, gain, step in gains if gain > LARGE_GAIN]
    if large:
        layer, gain, step = max(large, key=lambda g: g[1])
        names = [name for name, _, _ in large]
        return [
            finding(
                "init-too-large",
                "warning",
                f"{len(large)} layer(s) start with weights ~{gain / math.sqrt(2):.0f}× too large",
                why=f"{layer}'s weights start with std × √fan_in = {gain:.3g} (He gives √2, "
                "PyTorch's default 0.58): each such layer multiplies its activations' size by "
                "about that much, so they saturate or overflow with depth and the first steps "
                f"are spent shrinking them. Layers: {', '.join(names[:5])}"
                f"{' …' if len(names) > 5 else ''}.",
                remedy="Initialise with nn.init.kaiming_normal_ / xavier_normal_, or normal_ "
                "with std ≈ 1/√fan_in, instead of std=1.",
                step=step,
                layer=layer,
                layers=names[:20],
                gain=gain,
            )
        ]
    small = [(layer, gain, step) for layer, gain, step in gains if 0 < gain < SMALL_GAIN]
    if len(gains) >= MIN_LAYERS and len(small) > len(gains) / 2:
        layer, gain, step = min(small, key=lambda g: g[1])
        return [
            finding(
                "init-too-small",
                "warning",
                f"{len(small)} of {len(gains)} layers start with weights far too small",
                why=f"{layer}'s weights start with std × √fan_in = {gain:.2g} (He gives √2): "
                "each such layer shrinks its activations by that factor, so the signal and "
                "its gradients fade with depth.",
                remedy="Initialise with nn.init.kaiming_normal_ / xavier_normal_ (std ≈ "
                "√2/√fan_in), not a fixed small std.",
                step=step,
                layer=layer,
                layers=[name for name, _, _ in small][:20],
                gain=gain,
            )
        ]
    return []
