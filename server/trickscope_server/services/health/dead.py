"""Layers whose gradients are exactly zero, and dead units (dead ReLUs) spreading through a run."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from trickscope_server.services.health import setup_doc
from trickscope_server.services.health.model import Finding, NotApplicable, RunView, finding, rule
from trickscope_server.services.health.series import WINDOW, finite, head, per_layer, tail

DEAD_ZERO_FRAC = 0.999  # share of exactly-zero gradient elements that makes a sample dead
MIN_DEAD_SAMPLES = 3  # the last window must hold at least this many samples, all dead
DEAD_UNITS_RISE = 0.25  # tail median minus head median of the dead-unit share ...
DEAD_UNITS_HIGH = 0.5  # ... and the tail median itself


def _dead_since(view: RunView, layer: str) -> int | None:
    """The step from which every sample of the last window is dead, or None."""
    steps, values = finite(*view.series(f"grad_zero_frac/{layer}"))
    window = values[-WINDOW:]
    if window.size < MIN_DEAD_SAMPLES or not (window >= DEAD_ZERO_FRAC).all():
        return None
    alive = np.flatnonzero(values < DEAD_ZERO_FRAC)
    start = int(alive[-1]) + 1 if alive.size else 0
    return int(steps[start])


def _deepest_module_weight(view: RunView, dead: list[tuple[str, int]]) -> tuple[str, int]:
    """Of the deepest module with dead gradients, its weight matrix (a dead Linear's bias is dead
    too, and comes after its weight in model order, but the weight is the layer a user knows)."""
    module = dead[-1][0].rpartition(".")[0]
    members = [(name, since) for name, since in dead if name.rpartition(".")[0] == module]
    shapes = {p.get("name"): p.get("shape") for p in setup_doc.params(view)}
    for name, since in members:
        shape = shapes.get(name)
        if (isinstance(shape, list) and len(shape) >= 2) or name.endswith("weight"):
            return name, since
    return members[0]


@rule("dead-layer", "Layers whose gradients are all zero")
def dead_layer(view: RunView) -> Iterable[Finding]:
    """The deepest layer whose gradient is (almost) all zeros on every recent sample: the layers
    before a dead ReLU get zero gradients too, so the deepest one is where to look."""
    layers = per_layer(view, "grad_zero_frac")
    if not layers:
        raise NotApplicable("no per-layer gradient zero fractions (grad_zero_frac) were recorded")
    # An embedding's gradient touches only the rows of the batch's tokens: with a large vocabulary
    # it is almost all zeros while healthy.
    embeddings = {p.get("name") for p in setup_doc.params(view) if p.get("kind") == "embedding"}
    layers = [
        layer
        for layer in layers
        if layer not in embeddings and not (not embeddings and "embed" in layer.lower())
    ]
    dead = [(layer, since) for layer in layers if (since := _dead_since(view, layer)) is not None]
    if not dead:
        return []
    layer, since = _deepest_module_weight(view, dead)
    others = [name for name, _ in dead if name != layer]
    return [
        finding(
            "dead-layer",
            "warning",
            f"Gradients of {layer} are all zero from step {since}",
            why=f"At least {100 * DEAD_ZERO_FRAC:g}% of its gradient is exactly zero on every one "
            f"of the last samples: the layer no longer learns. "
            + (
                f"{len(others)} layer(s) before it are zero too, as they must be when nothing "
                "flows back through it."
                if others
                else ""
            ),
            remedy="Dead ReLUs after a too-high learning rate are the usual cause: lower it, use "
            "LeakyReLU/GELU, or check for a zero-initialised or masked-out layer.",
            step=since,
            layer=layer,
            zero_fraction=DEAD_ZERO_FRAC,
            also_dead=others[:20],
        )
    ]


@rule("dead-units-rising", "Share of dead units rising through the run")
def dead_units_rising(view: RunView) -> Iterable[Finding]:
    """Layers whose share of output units with an all-zero gradient rises through the run."""
    layers = per_layer(view, "grad_dead_units")
    if not layers:
        raise NotApplicable("no dead-unit shares (grad_dead_units) were recorded")
    rising = []
    for order, layer in enumerate(layers):
        steps, values = view.series(f"grad_dead_units/{layer}")
        start, end = head(steps, values), tail(steps, values)
        if not start.size or not end.size:
            continue
        early, late = float(np.median(start)), float(np.median(end))
        if late - early > DEAD_UNITS_RISE and late > DEAD_UNITS_HIGH:
            fs, fv = finite(steps, values)
            crossing = np.flatnonzero(fv > (early + late) / 2)
            step = int(fs[crossing[0]]) if crossing.size else int(fs[-1])
            rising.append((late - early, -order, layer, early, late, step))
    if not rising:
        return []
    _, _, layer, early, late, step = max(rising)
    return [
        finding(
            "dead-units-rising",
            "warning",
            f"Dead units of {layer} rose from {100 * early:.0f}% to {100 * late:.0f}%",
            why="A unit whose gradient is exactly zero on a whole batch has stopped learning "
            "(a dead ReLU); once dead it rarely recovers, so the layer's capacity shrinks.",
            remedy="Lower the learning rate or lengthen the warmup, use LeakyReLU/GELU, or add "
            "normalisation before the activation.",
            step=step,
            layer=layer,
            early=early,
            late=late,
            layers=[r[2] for r in sorted(rising, reverse=True)][:20],
        )
    ]
