"""Reading series for the rules: per-layer names, finite tails, trailing medians, the loss."""

from __future__ import annotations

import re
import warnings
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray

from trickscope_server.services.health.model import NotApplicable, RunView

TAIL = 0.2  # the last fifth of a run is "at the end"
WINDOW = 50  # samples of recent history for jumps and spikes

Columns = tuple[NDArray[np.int64], NDArray[np.float64]]


def per_layer(view: RunView, stat: str) -> list[str]:
    """Layers having a ``<stat>/<layer>`` series, in model order."""
    return [layer for layer in view.layers if f"{stat}/{layer}" in view.summaries]


def with_prefix(view: RunView, prefix: str) -> list[str]:
    """The suffixes of the series named ``<prefix><suffix>``, in model order where declared."""
    found = [name[len(prefix) :] for name in view.summaries if name.startswith(prefix)]
    order = {layer: i for i, layer in enumerate(view.layers)}
    return sorted(found, key=lambda s: (order.get(s, len(order)), natural(s)))


def natural(name: str) -> list[Any]:
    """A sort key that orders ``blocks.2`` before ``blocks.10``."""
    return [(0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", name) if p]


def finite(steps: NDArray[np.int64], values: NDArray[np.float64]) -> Columns:
    """The points whose value is finite."""
    keep = np.isfinite(values)
    return steps[keep], values[keep]


def read_finite(view: RunView, name: str) -> Columns:
    """A series' finite points (empty arrays when the series does not exist)."""
    if name not in view.summaries:
        return np.empty(0, np.int64), np.empty(0, np.float64)
    return finite(*view.series(name))


def tail(steps: NDArray[np.int64], values: NDArray[np.float64]) -> NDArray[np.float64]:
    """Finite values of the last :data:`TAIL` of the steps."""
    if steps.size == 0:
        return values
    cut = steps[0] + (1 - TAIL) * (steps[-1] - steps[0])
    out: NDArray[np.float64] = values[steps >= cut]
    return out[np.isfinite(out)]


def head(steps: NDArray[np.int64], values: NDArray[np.float64]) -> NDArray[np.float64]:
    """Finite values of the first :data:`TAIL` of the steps."""
    if steps.size == 0:
        return values
    cut = steps[0] + TAIL * (steps[-1] - steps[0])
    out: NDArray[np.float64] = values[steps <= cut]
    return out[np.isfinite(out)]


def last(view: RunView, name: str) -> float | None:
    """The series' last value from its summary."""
    summary = view.summaries.get(name)
    return None if summary is None else summary.last_value


def previous_windows(values: NDArray[np.float64], window: int = WINDOW) -> NDArray[np.float64]:
    """Row ``i``: the up-to-``window`` values before sample ``i`` (NaN-padded; non-finite as
    NaN)."""
    clean = np.where(np.isfinite(values), values, np.nan)
    padded = np.concatenate([np.full(window, np.nan), clean])
    out: NDArray[np.float64] = sliding_window_view(padded, window)[: values.size]
    return out


def trailing_median(
    values: NDArray[np.float64], *, window: int = WINDOW, min_history: int = 3
) -> NDArray[np.float64]:
    """Per sample, the median of the finite values among its previous ``window`` samples; NaN
    where fewer than ``min_history`` exist (a first sample has nothing to jump from)."""
    history = previous_windows(values, window)
    counts = np.isfinite(history).sum(axis=1)
    full = counts == window
    median: NDArray[np.float64] = np.full(values.size, np.nan)
    # np.median (a partition) on complete windows is several times faster than np.nanmedian,
    # which only the first samples and windows holding a non-finite value need.
    if full.any():
        median[full] = np.median(history[full], axis=1)
    partial = ~full & (counts >= min_history)
    if partial.any():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            median[partial] = np.nanmedian(history[partial], axis=1)
    return median


_TRAIN_LOSSES = ("loss/train", "train/loss", "loss", "train_loss", "loss_train", "training_loss")
_NOT_LOSS = ("scale", "scaler", "weight", "coef")  # accum/loss_scale is a measurement, not a loss


def loss_names(view: RunView) -> list[str]:
    """Loss series, training losses first: exact training names, then names with "train", then
    other losses, with evaluation losses last."""
    layers = set(view.layers)

    def is_loss(name: str) -> bool:
        low = name.lower()
        _, _, rest = name.partition("/")
        return "loss" in low and rest not in layers and not any(w in low for w in _NOT_LOSS)

    def rank(name: str) -> tuple[int, int, str]:
        low = name.lower()
        if name in _TRAIN_LOSSES:
            return (0, _TRAIN_LOSSES.index(name), name)
        if "train" in low:
            return (1, 0, name)
        if any(w in low for w in ("val", "eval", "test", "valid")):
            return (3, 0, name)
        return (2, 0, name)

    return sorted((n for n in view.summaries if is_loss(n)), key=rank)


def loss_name(view: RunView) -> str | None:
    """The training loss series, or the first loss-like series."""
    names = loss_names(view)
    return names[0] if names else None


def flagged(view: RunView, name: str, min_samples: int, reason: str) -> tuple[float, int] | None:
    """(share of samples above 0, first such step) of a 0/1 flag series, None when none is set;
    raises NotApplicable with ``reason`` when it has fewer than ``min_samples`` samples."""
    steps, flags = read_finite(view, name)
    if flags.size < min_samples:
        raise NotApplicable(reason)
    set_at = np.flatnonzero(flags > 0)
    return (float(set_at.size / flags.size), int(steps[set_at[0]])) if set_at.size else None
