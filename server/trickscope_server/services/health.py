"""Trick-aware health checks: read a run's numbers and say what went wrong, where and when.

Each check is a pure function of a :class:`RunView` (the run's config, declared layers, series
summaries and a way to read a series) returning :class:`Finding` objects that name the step and
the layer, say why it matters and what to try. The thresholds are rules of thumb from the sources
in TRICKS.md (CS231n and Karpathy for the update ratio, Ma & Yarats 2019 for Adam's warmup), kept
as named constants so each can be argued with.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray

from trickscope_server.services.query import LayerGrid, load_layer_grid, load_series
from trickscope_server.services.runs import require_run
from trickscope_server.storage import Database, RunRow, SeriesRow, Session
from trickscope_server.storage import points as points_store
from trickscope_server.storage import runs as run_store

Severity = str  # "error" | "warning" | "info"

UPDATE_RATIO_BAND = (1e-5, 1e-1)  # persistently outside: steps too small or too large
VANISHING_NORM = 1e-7  # a gradient norm this small carries no signal in float32 training
DEPTH_SPREAD = 1e-4  # smallest / largest layer gradient norm below this: vanishing with depth
EXPLODING_FACTOR = 100.0  # a jump this far above the recent median
SPIKE_Z = 8.0  # robust z-score of a loss spike
WINDOW = 50  # steps of recent history for jumps and spikes
CLIPPED_SHARE_HIGH = 0.9  # clipping almost every step: the threshold is the step size now
EPS_DOMINANCE_HIGH = 0.5  # eps larger than sqrt(v̂) on most elements: Adam acts like SGD
EMA_WORSE_MARGIN = 0.005  # accuracy points by which EMA may trail raw before we say so
TAIL = 0.2  # the last fifth of a run is "at the end"
REPLICA_TOLERANCE = 1e-5  # relative: DDP replicas agree to the last bit, this allows mixed kernels
STRAGGLER_FACTOR = 2.0  # a rank's input wait against the other ranks' typical wait
STRAGGLER_SHARE = 0.1  # ... and its excess as a share of the step, below which it is noise
STRAGGLER_SECONDS = 0.005  # ... and in absolute terms: on millisecond steps, scheduling jitter


@dataclass(frozen=True)
class Finding:
    """One health finding; ``step`` and ``layer`` say where when the check can tell."""

    check: str
    severity: Severity
    title: str
    detail: str
    step: int | None = None
    layer: str | None = None


@dataclass(frozen=True)
class Summary:
    """The per-series summary the server keeps at ingest."""

    count: int
    last_step: int | None
    last_value: float | None
    first_nonfinite_step: int | None


class RunView(Protocol):
    """What the checks read: everything but points comes from summaries (no scans)."""

    @property
    def status(self) -> str: ...

    @property
    def config(self) -> Mapping[str, Any]: ...

    @property
    def layers(self) -> Sequence[str]:
        """Parameter names in model order."""
        ...

    @property
    def ranks(self) -> Mapping[str, Mapping[str, Any]]:
        """A distributed run's ranks (``"0"``, ``"1"``, ...): each one's host and process."""
        ...

    @property
    def summaries(self) -> Mapping[str, Summary]: ...

    def series(self, name: str) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """Steps and values of a series (spike-preserving downsampling is fine)."""
        ...


Check = Callable[[RunView], Iterable[Finding]]


def _per_layer(view: RunView, stat: str) -> list[str]:
    """Layers having a ``<stat>/<layer>`` series, in model order."""
    return [layer for layer in view.layers if f"{stat}/{layer}" in view.summaries]


def _tail(steps: NDArray[np.int64], values: NDArray[np.float64]) -> NDArray[np.float64]:
    """Finite values of the last :data:`TAIL` of the steps."""
    if steps.size == 0:
        return values
    cut = steps[0] + (1 - TAIL) * (steps[-1] - steps[0])
    tail: NDArray[np.float64] = values[steps >= cut]
    return tail[np.isfinite(tail)]


def _last(view: RunView, name: str) -> float | None:
    summary = view.summaries.get(name)
    return None if summary is None else summary.last_value


def _first_loss(view: RunView) -> str | None:
    for name in ("loss/train", "loss"):
        if name in view.summaries:
            return name
    return next((n for n in sorted(view.summaries) if n.startswith("loss")), None)


def nonfinite(view: RunView) -> Iterable[Finding]:
    """The first layer whose gradient went NaN/Inf, and the first non-finite loss."""
    firsts = [
        (summary.first_nonfinite_step, view.layers.index(layer), layer)
        for layer in _per_layer(view, "grad_norm")
        if (summary := view.summaries[f"grad_norm/{layer}"]).first_nonfinite_step is not None
    ]
    if firsts:
        step, _, layer = min(firsts)
        others = sum(1 for s, _, _ in firsts if s == step) - 1
        also = f" ({others} other layers at the same step)" if others else ""
        yield Finding(
            "nonfinite-gradient",
            "error",
            f"Gradient of {layer} became NaN/Inf at step {step}",
            f"The first non-finite gradient in model order{also}. Everything downstream of it "
            "is poisoned from here on. Try a lower learning rate or warmup, gradient clipping "
            "(non-finite skip), and check this layer's inputs (log of zero, division by zero, "
            "fp16 overflow: use bf16 or a GradScaler).",
            step=step,
            layer=layer,
        )
    loss = _first_loss(view)
    loss_step = view.summaries[loss].first_nonfinite_step if loss is not None else None
    if loss_step is not None:
        yield Finding(
            "nonfinite-loss",
            "error",
            f"{loss} became NaN/Inf at step {loss_step}",
            "Training diverged or a numerically unsafe operation produced NaN. Look at the "
            "gradient and LR charts just before this step.",
            step=loss_step,
        )


def _trailing_median(values: NDArray[np.float64]) -> NDArray[np.float64]:
    """Median of the finite values among the previous WINDOW points, for points WINDOW…end."""
    history = sliding_window_view(np.where(np.isfinite(values), values, np.nan), WINDOW)[:-1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN window has no median
        median: NDArray[np.float64] = np.nanmedian(history, axis=1)
    return median


def _jumps(steps: NDArray[np.int64], values: NDArray[np.float64]) -> list[tuple[int, float]]:
    """(step, factor) where a finite value exceeds the median of the previous WINDOW points."""
    if values.size <= WINDOW:
        return []
    baseline = _trailing_median(values)
    current = values[WINDOW:]
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = current / baseline
    hits = np.flatnonzero((baseline > 0) & np.isfinite(current) & (factor > EXPLODING_FACTOR))
    return [(int(steps[WINDOW + i]), float(factor[i])) for i in hits]


def exploding(view: RunView) -> Iterable[Finding]:
    """Gradient norms that jump far above their recent window, per layer (first one reported)."""
    candidates: list[tuple[int, int, str, float]] = []
    for order, layer in enumerate(_per_layer(view, "grad_norm")):
        steps, values = view.series(f"grad_norm/{layer}")
        jumps = _jumps(steps, values)
        if jumps:
            step, factor = jumps[0]
            candidates.append((step, order, layer, factor))
    if not candidates:
        return
    step, _, layer, factor = min(candidates)
    more = f" {len(candidates) - 1} more layers jump later." if len(candidates) > 1 else ""
    yield Finding(
        "exploding-gradient",
        "warning",
        f"Gradient norm of {layer} jumped {factor:,.0f}× at step {step}",
        f"The norm exceeded {EXPLODING_FACTOR:g}× the median of the previous {WINDOW} samples."
        f"{more} Gradient clipping bounds the damage; a lower learning rate or a longer "
        "warmup removes the cause.",
        step=step,
        layer=layer,
    )


def vanishing(view: RunView) -> Iterable[Finding]:
    """Layers with tiny gradients at the end, or gradients spanning orders of magnitude."""
    medians: dict[str, float] = {}
    for layer in _per_layer(view, "grad_norm"):
        tail = _tail(*view.series(f"grad_norm/{layer}"))
        if tail.size:
            medians[layer] = float(np.median(tail))
    tiny = [layer for layer, m in medians.items() if 0 < m < VANISHING_NORM]
    if tiny:
        yield Finding(
            "vanishing-gradient",
            "warning",
            f"{len(tiny)} layer(s) have gradient norms below {VANISHING_NORM:g}",
            "Near the end of the run their gradients carry almost no signal: "
            f"{', '.join(tiny[:5])}{' …' if len(tiny) > 5 else ''}. Check initialisation, "
            "saturating activations and missing normalisation or residual connections.",
            layer=tiny[0],
        )
    positive = {layer: m for layer, m in medians.items() if m > 0}
    if len(positive) >= 2:
        low = min(positive, key=positive.__getitem__)
        high = max(positive, key=positive.__getitem__)
        spread = positive[low] / positive[high]
        if spread < DEPTH_SPREAD:
            yield Finding(
                "gradient-spread",
                "warning",
                f"Gradient norms span {-math.log10(spread):.0f} orders of magnitude",
                f"{low} gets {positive[low]:.2e}, {high} gets {positive[high]:.2e}. One "
                "learning rate cannot suit both: look for vanishing gradients with depth "
                "(initialisation, normalisation, residual connections).",
                layer=low,
            )


def update_ratio(view: RunView) -> Iterable[Finding]:
    """‖Δw‖/‖w‖ outside ~1e-5 … 1e-1 over the run (median; rule of thumb: around 1e-3)."""
    low_band, high_band = UPDATE_RATIO_BAND
    high: list[tuple[float, str]] = []
    low: list[tuple[float, str]] = []
    for layer in _per_layer(view, "update_ratio"):
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
    if high:
        ratio, layer = max(high)
        yield Finding(
            "update-ratio-high",
            "warning",
            f"Updates are large relative to weights in {len(high)} layer(s)",
            f"{layer} changes by {ratio:.1e} of its norm per step (rule of thumb: about 1e-3; "
            f"CS231n). Weights this volatile rarely settle: lower the learning rate.",
            layer=layer,
        )
    if low:
        ratio, layer = min(low)
        yield Finding(
            "update-ratio-low",
            "info",
            f"Updates are tiny relative to weights in {len(low)} layer(s)",
            f"{layer} changes by {ratio:.1e} of its norm per step (rule of thumb: about 1e-3). "
            "These layers barely learn: the learning rate may be too low for them, or weight "
            "decay and the gradient cancel.",
            layer=layer,
        )


def never_gradient(view: RunView) -> Iterable[Finding]:
    """Declared parameters that never received a gradient (frozen or disconnected)."""
    with_grad = set(_per_layer(view, "grad_norm"))
    if not with_grad:
        return
    missing = [layer for layer in view.layers if layer not in with_grad]
    if missing:
        yield Finding(
            "no-gradient",
            "info",
            f"{len(missing)} parameter(s) never received a gradient",
            f"{', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}: frozen on purpose, or "
            "not connected to the loss (an unused module, a detached branch). They are shown as "
            "frozen, not dead.",
            layer=missing[0],
        )


def loss_spikes(view: RunView) -> Iterable[Finding]:
    """Loss values far above their recent window (robust z-score)."""
    name = _first_loss(view)
    if name is None:
        return
    steps, values = view.series(name)
    if values.size <= WINDOW:
        return
    median = _trailing_median(values)
    windows = sliding_window_view(np.where(np.isfinite(values), values, np.nan), WINDOW)[:-1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        spread = 1.4826 * np.nanmedian(np.abs(windows - median[:, None]), axis=1)
        z = (values[WINDOW:] - median) / spread
    hits = np.flatnonzero((spread > 0) & np.isfinite(values[WINDOW:]) & (z > SPIKE_Z))
    if hits.size:
        i = int(hits[0])
        step, value = int(steps[WINDOW + i]), float(values[WINDOW + i])
        yield Finding(
            "loss-spike",
            "warning",
            f"{name} spiked at step {step}",
            f"{value:.4g} against a recent median of {float(median[i]):.4g}. Early spikes during "
            "or right after warmup point at a learning rate that is too high; isolated ones at "
            "bad batches. Check the gradient-norm chart at the same step.",
            step=step,
        )


def clipping(view: RunView) -> Iterable[Finding]:
    """Clipping on nearly every step (the threshold became the step size)."""
    if "clip/clipped" not in view.summaries:
        return
    tail = _tail(*view.series("clip/clipped"))
    if tail.size and float(tail.mean()) > CLIPPED_SHARE_HIGH:
        threshold = _last(view, "clip/threshold")
        at = f" at {threshold:g}" if threshold is not None else ""
        yield Finding(
            "clipping-always",
            "warning",
            f"Gradients are clipped on {100 * float(tail.mean()):.0f}% of recent steps",
            f"The clipping threshold{at} is below the typical gradient norm, so it sets the step "
            "size instead of catching outliers. Raise it to around the median pre-clip norm.",
        )


def _beta2(view: RunView) -> float | None:
    value = _last(view, "opt/beta2/group0")
    if value is not None:
        return value
    # Without the optimizer reporter, trust a config that names an Adam-family optimizer.
    optimizer = str(view.config.get("optimizer", "")).lower()
    betas = view.config.get("betas")
    if "adam" in optimizer and isinstance(betas, (list, tuple)) and len(betas) == 2:
        return float(betas[1])
    return None


def warmup(view: RunView) -> Iterable[Finding]:
    """Adam-family runs without warmup, or with warmup much shorter than 2/(1−β2)."""
    beta2 = _beta2(view)
    if beta2 is None or not 0 < beta2 < 1 or "lr/group0" not in view.summaries:
        return
    steps, lrs = view.series("lr/group0")
    finite = np.isfinite(lrs)
    if steps.size < 2 or not finite.any():
        return
    peak_index = int(np.argmax(np.where(finite, lrs, -np.inf)))
    warmup_steps = int(steps[peak_index] - steps[0])
    recommended = round(2 / (1 - beta2))
    if warmup_steps == 0:
        yield Finding(
            "no-warmup",
            "warning",
            "Adam-family optimizer without learning-rate warmup",
            f"The learning rate starts at its peak. Adam's second-moment estimate is unreliable "
            f"for its first ~2/(1−β2) = {recommended} steps (β2 = {beta2:g}; Ma & Yarats 2019): "
            "add a linear warmup.",
            step=int(steps[0]),
        )
    elif warmup_steps < recommended / 4:
        yield Finding(
            "short-warmup",
            "info",
            f"Warmup of {warmup_steps} steps is short for β2 = {beta2:g}",
            f"Rule of thumb: about 2/(1−β2) = {recommended} steps (Ma & Yarats 2019). Lengthen "
            "it if early loss spikes appear.",
            step=int(steps[peak_index]),
        )


def lr_zero_early(view: RunView) -> Iterable[Finding]:
    """The learning rate reaching zero long before the end of the run."""
    if "lr/group0" not in view.summaries:
        return
    steps, lrs = view.series("lr/group0")
    if steps.size < 10:
        return
    zero = np.flatnonzero(lrs <= 0)
    if zero.size and zero[0] < (1 - TAIL / 2) * steps.size and not (lrs[zero[0] :] > 0).any():
        step = int(steps[zero[0]])
        yield Finding(
            "lr-zero-early",
            "warning",
            f"The learning rate is zero from step {step}",
            f"{steps.size - zero[0]} of {steps.size} logged steps train with LR 0: the schedule's "
            "total steps is probably shorter than the run (counted in epochs, or stepped per "
            "micro-batch).",
            step=step,
        )


def ema(view: RunView) -> Iterable[Finding]:
    """EMA worse than the raw model at the end, or averaging over most of the run."""
    raw, averaged = _last(view, "eval/acc_raw"), _last(view, "eval/acc_ema")
    if (
        raw is not None
        and averaged is not None
        and view.status != "running"
        and averaged < raw - EMA_WORSE_MARGIN
    ):
        yield Finding(
            "ema-worse",
            "warning",
            f"EMA accuracy {averaged:.3f} trails the raw model's {raw:.3f} at the end",
            "The average still remembers early weights (decay too close to 1 for this run "
            "length) or BatchNorm statistics are stale for the averaged weights: shorten the "
            "horizon or average the buffers.",
        )
    decay = _last(view, "ema/decay")
    summary = view.summaries.get("ema/decay")
    if decay is not None and 0 < decay < 1 and summary is not None and summary.last_step:
        horizon = 1 / (1 - decay)
        if horizon > summary.last_step / 2:
            yield Finding(
                "ema-horizon",
                "info",
                f"EMA horizon of ~{horizon:,.0f} steps is long for a {summary.last_step}-step run",
                "The average weights its first half heavily; evaluate it once the run is several "
                "horizons long, or lower the decay.",
                step=summary.last_step,
            )


def eps_dominance(view: RunView) -> Iterable[Finding]:
    """Layers where Adam's eps is larger than √v̂ on most elements."""
    prefix = "opt/eps_dominance/"
    heavy = sorted(
        (value, name[len(prefix) :])
        for name, summary in view.summaries.items()
        if name.startswith(prefix)
        and (value := summary.last_value) is not None
        and value > EPS_DOMINANCE_HIGH
    )
    if heavy:
        fraction, layer = heavy[-1]
        yield Finding(
            "eps-dominates",
            "warning",
            f"Adam's eps dominates √v̂ in {len(heavy)} layer(s)",
            f"In {layer}, {100 * fraction:.0f}% of elements have eps > √v̂: there Adam degrades "
            "to momentum SGD with a tiny step. Lower eps (e.g. 1e-8) or check for very small "
            "gradients in these layers.",
            layer=layer,
        )


def _natural(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def drop_path(view: RunView) -> Iterable[Finding]:
    """DropPath rates that do not rise with depth."""
    prefix = "drop_path/rate/"
    rates = sorted(
        (_natural(name[len(prefix) :]), summary.last_value, name[len(prefix) :])
        for name, summary in view.summaries.items()
        if name.startswith(prefix) and summary.last_value is not None
    )
    values = [rate for _, rate, _ in rates]
    if len(values) >= 2 and any(b < a for a, b in zip(values, values[1:], strict=False)):
        block = next(rates[i + 1][2] for i in range(len(values) - 1) if values[i + 1] < values[i])
        yield Finding(
            "drop-path-order",
            "info",
            "DropPath rates do not rise with depth",
            f"{block} drops less often than the block before it. Stochastic depth works best "
            "with rates rising linearly with depth (Huang et al. 2016).",
            layer=block,
        )


def _by_rank(view: RunView, stat: str) -> dict[int, str]:
    """The ``rank/<r>/<stat>`` series of a distributed run, by rank."""
    found: dict[int, str] = {}
    for name in view.summaries:
        head, _, rest = name.partition("/")
        rank, _, tail = rest.partition("/")
        if head == "rank" and tail == stat and rank.isdigit():
            found[int(rank)] = name
    return found


def _first_difference(view: RunView, reference: str, other: str) -> int | None:
    """The first step both series have where their values differ beyond the tolerance
    (NaN equals NaN, an infinity equals itself)."""
    ref_steps, ref_values = view.series(reference)
    steps, values = view.series(other)
    common, at_ref, at_other = np.intersect1d(ref_steps, steps, return_indices=True)
    a, b = ref_values[at_ref], values[at_other]
    with np.errstate(invalid="ignore"):  # inf - inf inside isclose, which still says True
        close = np.isclose(a, b, rtol=REPLICA_TOLERANCE, atol=0.0, equal_nan=True)
    differ = np.flatnonzero(~close)
    return int(common[differ[0]]) if differ.size else None


def _ranks_text(ranks: list[int]) -> str:
    return f"rank {ranks[0]}" if len(ranks) == 1 else f"ranks {', '.join(map(str, ranks))}"


def replicas(view: RunView) -> Iterable[Finding]:
    """Ranks of a distributed run whose gradients or weights part from rank 0's."""
    for stat, check, what in (
        ("grad_norm", "ranks-gradients-differ", "Gradients"),
        ("weight_norm", "ranks-weights-differ", "Weights"),
    ):
        names = _by_rank(view, stat)
        if 0 not in names:
            continue
        firsts = {
            rank: step
            for rank, name in sorted(names.items())
            if rank and (step := _first_difference(view, names[0], name)) is not None
        }
        if not firsts:
            continue
        step = min(firsts.values())
        ranks = sorted(firsts)
        if stat == "grad_norm":
            why = (
                "After DDP's all-reduce every rank holds the same averaged gradient, so they did "
                "not all go through it: backward passes under no_sync() up to and including the "
                "step's last micro-batch, parameters outside the DDP wrapper, or a gradient "
                "changed on one rank after the all-reduce. Each replica now takes its own step."
            )
        else:
            why = (
                "Their gradients agree, so something changed these weights outside the optimizer "
                "step on some ranks only: an edit in rank-dependent code, a checkpoint loaded on "
                "one rank, or a buffer-like parameter set per rank. DDP never re-synchronises "
                "parameters after wrapping, so the difference stays."
            )
        yield Finding(
            check,
            "error",
            f"{what} of {_ranks_text(ranks)} differ from rank 0's from step {step}",
            why,
            step=step,
        )
        return  # differing gradients explain differing weights: one finding is the cause


def _finite_median(view: RunView, name: str) -> float | None:
    """The median of a series' finite values, or ``None`` when it has none."""
    values = view.series(name)[1]
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else None


def stragglers(view: RunView) -> Iterable[Finding]:
    """A rank that waits for its input far longer than the others, holding every rank up."""
    medians = {
        stat: {
            rank: median
            for rank, name in _by_rank(view, stat).items()
            if (median := _finite_median(view, name)) is not None
        }
        for stat in ("data_time", "step_time")
    }
    waits, step_times = medians["data_time"], list(medians["step_time"].values())
    if len(waits) < 2 or not step_times:
        return
    slow = max(waits, key=lambda rank: waits[rank])
    typical = float(np.median([wait for rank, wait in waits.items() if rank != slow]))
    excess = waits[slow] - typical
    step_time = float(np.median(step_times))
    if (
        waits[slow] > STRAGGLER_FACTOR * typical
        and step_time > 0
        and excess / step_time > STRAGGLER_SHARE
        and excess > STRAGGLER_SECONDS
    ):
        host = view.ranks.get(str(slow), {}).get("hostname")
        where = f"on {host}" if isinstance(host, str) and host else "where it runs"
        yield Finding(
            "straggler",
            "warning",
            f"Rank {slow} waits {1000 * waits[slow]:.0f} ms per step for its input, against "
            f"{1000 * typical:.0f} ms on the other ranks",
            f"Every rank waits for the slowest at the gradient all-reduce, so this costs the whole "
            f"job about {100 * excess / step_time:.0f}% of each {1000 * step_time:.0f} ms step. "
            "Give that rank's DataLoader more workers (or pin_memory and prefetching), and look "
            f"for a slower disk or a busier host {where}.",
        )


CHECKS: tuple[Check, ...] = (
    nonfinite,
    exploding,
    vanishing,
    update_ratio,
    never_gradient,
    loss_spikes,
    clipping,
    warmup,
    lr_zero_early,
    ema,
    eps_dominance,
    drop_path,
    replicas,
    stragglers,
)

_SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}


def diagnose(view: RunView, checks: Sequence[Check] = CHECKS) -> list[Finding]:
    """Every finding of ``checks``, most severe first, then by step."""
    findings = [finding for check in checks for finding in check(view)]
    return sorted(
        findings,
        key=lambda f: (_SEVERITY_ORDER[f.severity], f.step if f.step is not None else math.inf),
    )


HEALTH_POINTS = 2000  # per series: enough for windows of WINDOW steps, extremes kept


class _StoredRun:
    """A :class:`RunView` over the database: summaries read once, series lazily in the session."""

    def __init__(self, session: Session, run: RunRow, rows: list[SeriesRow], cursor: int) -> None:
        self.session = session
        self.run = run
        self.status = run.status
        self.config: Mapping[str, Any] = run.config
        self.layers: Sequence[str] = list(run.layers)
        self.ranks: Mapping[str, Mapping[str, Any]] = run.ranks
        self._layer_set = set(self.layers)
        self._ids = {row.name: row.id for row in rows}
        self._cursor = cursor
        self._grids: dict[str, LayerGrid] = {}
        self.summaries: Mapping[str, Summary] = {
            row.name: Summary(
                count=row.count,
                last_step=row.last_step,
                # SQLite stores NaN as NULL: a NULL last value of a series with points is NaN.
                last_value=math.nan if row.last_value is None and row.count else row.last_value,
                first_nonfinite_step=row.first_nonfinite_step,
            )
            for row in rows
        }

    def series(self, name: str) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        stat, _, layer = name.partition("/")
        if layer in self._layer_set:
            # Per-layer series come a statistic at a time, all layers in one query.
            grid = self._grids.get(stat)
            if grid is None:
                grid = self._grids[stat] = load_layer_grid(
                    self.session,
                    run_id=self.run.id,
                    stat=stat,
                    declared=list(self.layers),
                    points=HEALTH_POINTS,
                )
            row = grid.layers.index(layer)
            filled = grid.filled[row]
            return grid.steps[filled], grid.cells[row][filled]
        return load_series(
            self.session, series_id=self._ids[name], cursor=self._cursor, points=HEALTH_POINTS
        )


def diagnose_run(db: Database, *, run_id: str) -> list[Finding]:
    """Every health finding of a stored run, most severe first."""
    with db.reader() as session:
        run = require_run(session, run_id)
        rows = run_store.series_of_runs(session, [run_id])
        view = _StoredRun(session, run, rows, points_store.run_seq(session, run_id=run_id))
        return diagnose(view)
