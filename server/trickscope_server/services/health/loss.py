"""The loss: single blips that recovered (info), rises that stayed (divergence, warning) and a
loss that never fell (stalled, warning).

Only finite values are judged here: an Inf/NaN loss is the non-finite check's finding, not a
spike. Losses may be negative (likelihoods, RL objectives), so rises are measured in the loss's own
units against its noise and against how much it had fallen, never as ratios.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray

from trickscope_server.services.health.model import Finding, NotApplicable, RunView, finding, rule
from trickscope_server.services.health.series import (
    TAIL,
    WINDOW,
    finite,
    loss_name,
    previous_windows,
)

SPIKE_Z = 8.0  # robust z-score (median and MAD of the previous samples) of a spike
SPIKE_HISTORY = 10  # previous samples a spike is measured against
GIVE_BACK = 0.5  # divergence: the end sits above the best level by this share of the fall ...
NOISE_RISES = 5.0  # ... and by this many noise units (robust step-to-step spread) ...
RELATIVE_RISE = 0.05  # ... and by this share of the best level's magnitude
MIN_SAMPLES = 10
STALL_SAMPLES = 50  # a loss is judged as stalled only over at least this many samples ...
STALL_FALL = 0.01  # ... ending less than this share of its start (or its noise) below it


def noise(values: NDArray[np.float64]) -> float:
    """Robust step-to-step noise of a series (MAD of differences, as a standard deviation)."""
    if values.size < 3:
        return 0.0
    return float(1.4826 * np.median(np.abs(np.diff(values))) / np.sqrt(2))


def spikes(values: NDArray[np.float64]) -> NDArray[np.intp]:
    """Indices of finite values more than SPIKE_Z robust deviations above their previous ones."""
    history = previous_windows(values, WINDOW)
    enough = np.isfinite(history).sum(axis=1) >= SPIKE_HISTORY
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # windows without any history
        median = np.nanmedian(history, axis=1)
        spread = 1.4826 * np.nanmedian(np.abs(history - median[:, None]), axis=1)
        z = (values - median) / spread
    return np.flatnonzero(enough & (spread > 0) & (z > SPIKE_Z))


def rise(
    steps: NDArray[np.int64], values: NDArray[np.float64]
) -> tuple[int, float, float, float] | None:
    """(step the rise began, best level, end level, fall before it) when the end of a finite
    series sits well above the best level reached before its last :data:`TAIL`."""
    n = values.size
    if n < MIN_SAMPLES:
        return None
    k = max(3, n // 50)
    smooth = np.median(sliding_window_view(values, k), axis=1)  # smooth[i] ends at sample i+k-1
    cut = steps[0] + (1 - TAIL) * (steps[-1] - steps[0])
    tail_start = int(np.searchsorted(steps, cut))
    before = smooth[: max(0, tail_start - k + 1)]
    if not before.size or tail_start >= n:
        return None
    best_at = int(np.argmin(before))
    best = float(before[best_at])
    end = float(np.median(values[tail_start:]))
    fall = max(0.0, float(np.median(values[: max(3, n // 10)])) - best)
    up = end - best
    if up <= max(GIVE_BACK * fall, NOISE_RISES * noise(values), RELATIVE_RISE * abs(best)):
        return None
    above = np.flatnonzero(smooth[best_at:] > best + up / 2)
    start = best_at + (int(above[0]) if above.size else 0) + k - 1
    return int(steps[min(start, n - 1)]), best, end, fall


def _divergence(view: RunView, name: str) -> Finding | None:
    steps, values = view.series(name)
    bad = view.summaries[name].first_nonfinite_step
    fs, fv = finite(steps, values)
    if bad is not None:
        before = fs < bad
        rose = rise(fs[before], fv[before])
        if rose is not None:
            step, best, end, _ = rose
            return finding(
                "loss-divergence",
                "warning",
                f"{name} rose from step {step} and went NaN/Inf at step {bad}",
                why=f"It climbed from {best:.4g} to {end:.4g} before turning non-finite: the "
                "optimisation diverged, the NaN is its end point.",
                remedy="Lower the learning rate or lengthen the warmup; clipping delays it.",
                step=step,
                series=name,
                best=best,
                end=end,
                nonfinite_step=bad,
            )
    rose = rise(fs, fv)
    if rose is None:
        return None
    step, best, end, fall = rose
    return finding(
        "loss-divergence",
        "warning",
        f"{name} rose from step {step} and stayed up",
        why=f"It had reached {best:.4g} and ends at a median of {end:.4g}, giving back "
        f"{'more than ' if fall else ''}{100 * GIVE_BACK:.0f}% of what it had gained: training "
        "is diverging rather than converging.",
        remedy="Lower the learning rate (or the peak of the schedule), lengthen the warmup, and "
        "check the gradient-norm chart at the step it began.",
        step=step,
        series=name,
        best=best,
        end=end,
    )


def _stalled(name: str, steps: NDArray[np.int64], values: NDArray[np.float64]) -> Finding | None:
    """A non-negative loss (cross-entropy, squared error: minimised towards 0) that ends no
    lower than where it started: nothing was learned. Losses that go negative are likelihoods or
    RL objectives, whose flat stretches mean something else."""
    if values.size < STALL_SAMPLES or values.min() < 0:
        return None
    # The first sample is the untrained model's loss; the median of the first few guards against
    # one lucky batch. A spike right after the start (too high an LR) must not count as the start.
    start = min(float(values[0]), float(np.median(values[: max(3, values.size // 50)])))
    tail_start = int(np.searchsorted(steps, steps[0] + (1 - TAIL) * (steps[-1] - steps[0])))
    end = float(np.median(values[tail_start:]))
    # A fall smaller than one batch-to-batch wobble is no fall: a minibatch loss is noisy.
    if start - end > max(STALL_FALL * abs(start), noise(values)):
        return None
    return finding(
        "loss-stalled",
        "warning",
        f"{name} has not fallen in {int(steps[-1] - steps[0])} steps",
        why=f"It started at {start:.4g} and ends at a median of {end:.4g}: the model is not "
        "learning. A learning rate far too low (or too high, collapsing the network early), "
        "gradients that never reach the weights, or labels that do not match the inputs.",
        remedy="Check the update-ratio and gradient-norm charts, the LR chart, and that one "
        "small batch can be overfit.",
        step=int(steps[tail_start]) if tail_start < steps.size else int(steps[-1]),
        series=name,
        start=start,
        end=end,
    )


@rule("loss", "Loss spikes, divergence and a loss that never falls")
def loss(view: RunView) -> Iterable[Finding]:
    """A sustained rise (warning), else the first single spike that recovered (info)."""
    name = loss_name(view)
    if name is None:
        raise NotApplicable("no loss series was recorded (a name containing 'loss')")
    steps, values = finite(*view.series(name))
    if values.size < MIN_SAMPLES:
        raise NotApplicable(f"{name} has {values.size} finite samples, fewer than {MIN_SAMPLES}")
    diverged = _divergence(view, name)
    if diverged is not None:
        return [diverged]
    stalled = _stalled(name, steps, values)
    if stalled is not None:
        return [stalled]
    hits = spikes(values)
    if not hits.size:
        return []
    i = int(hits[0])
    level = float(np.median(values[max(0, i - WINDOW) : i]))
    return [
        finding(
            "loss-spike",
            "info",
            f"{name} spiked at step {int(steps[i])} and recovered",
            why=f"{float(values[i]):.4g} against a recent median of {level:.4g} "
            f"({hits.size} spike(s) in all). Early spikes during or right after warmup point at "
            "a learning rate that is too high; isolated ones at bad batches.",
            remedy="Check the gradient-norm chart at the same step; clipping absorbs isolated "
            "ones.",
            step=int(steps[i]),
            series=name,
            value=float(values[i]),
            median=level,
            spikes=int(hits.size),
        )
    ]


def early_trouble(view: RunView, until: float) -> int | None:
    """The step of a loss spike or rise at or before step ``until``, or None."""
    name = loss_name(view)
    if name is None:
        return None
    steps, values = finite(*view.series(name))
    if values.size < MIN_SAMPLES:
        return None
    hits = [int(steps[i]) for i in spikes(values) if steps[i] <= until]
    if hits:
        return hits[0]
    early = steps <= until
    if early.sum() < 3:
        return None
    ev = values[early]
    climb = ev - np.minimum.accumulate(ev)
    span = float(values.max() - values.min())
    threshold = max(0.25 * span, NOISE_RISES * noise(values))
    up = np.flatnonzero(climb > threshold)
    return int(steps[early][up[0]]) if up.size and threshold > 0 else None
