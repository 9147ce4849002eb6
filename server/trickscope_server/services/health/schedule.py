"""The learning-rate schedule: Adam's warmup, a warmup stepped in jumps, an LR stuck at zero.

Warmup length follows Ma & Yarats 2019 (https://arxiv.org/abs/1910.04209): Adam's second-moment
estimate needs about 2/(1−β2) steps, capped at a tenth of a planned run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from trickscope_server.services.health import setup_doc
from trickscope_server.services.health.loss import early_trouble
from trickscope_server.services.health.model import Finding, NotApplicable, RunView, finding, rule
from trickscope_server.services.health.series import TAIL, read_finite

HIGH_PEAK_LR = 2e-3  # above this an Adam run without warmup is a warning, not a note
SHORT_WARMUP = 0.25  # a warmup shorter than this share of the recommended one is short
AT_PEAK = 0.999  # the warmup ends at the first sample within this share of the peak LR
JUMP_LEVELS = 5  # a rise through at most this many distinct LR levels ...
JUMP_RISE_STEPS = 20  # ... over at least this many steps ...
JUMP_SIZE = 0.10  # ... each change larger than this share, is a schedule stepped per epoch
SCHED_LAG = 0.5  # scheduler calls advancing slower than this share of optimizer steps
ZERO_START_STEPS = 5  # LR 0 for more than this many first steps ...
ZERO_START_SHARE = 0.01  # ... and more than this share of the run
# An LR below this share of the run's peak trains no more than LR 0 does (an exponential decay
# stepped per micro-batch reaches 1e-40 of its peak long before the end, never exactly 0).
NEGLIGIBLE_LR = 1e-6


def _lr(view: RunView) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    if "lr/group0" not in view.summaries:
        raise NotApplicable("no learning-rate series (lr/group0) was recorded")
    steps, lrs = read_finite(view, "lr/group0")
    if steps.size < 2:
        raise NotApplicable("fewer than 2 learning-rate samples")
    return steps, lrs


def recommended_warmup(beta2: float, planned: int | None) -> int:
    """min(2/(1−β2), planned/10): the second moment's horizon, but never most of a short run."""
    horizon = 2 / (1 - beta2)
    return max(1, round(min(horizon, planned / 10) if planned else horizon))


@rule("warmup", "Warmup for Adam's second moment")
def warmup(view: RunView) -> Iterable[Finding]:
    """Adam-family runs whose LR starts at its peak, or reaches it far sooner than recommended."""
    family = setup_doc.family(view)
    if family is None:
        raise NotApplicable("the optimizer is unknown (no setup, no optimizer config key)")
    if family != "adam":
        raise NotApplicable("the optimizer is not Adam-family")
    if (setup_doc.optimizer_class(view) or "").lower() == "radam":
        raise NotApplicable("RAdam rectifies its second moment itself and needs no warmup")
    beta2 = setup_doc.beta2(view)
    if beta2 is None or not 0 < beta2 < 1:
        raise NotApplicable("Adam's β2 is unknown")
    steps, lrs = _lr(view)
    peak = float(lrs.max())
    if peak <= 0:
        raise NotApplicable("the learning rate is never above zero")
    reached = int(np.flatnonzero(lrs >= AT_PEAK * peak)[0])
    warmup_steps = int(steps[reached] - steps[0])
    planned = setup_doc.planned_steps(view)
    recommended = recommended_warmup(beta2, planned)
    evidence: dict[str, Any] = {
        "beta2": beta2,
        "peak_lr": peak,
        "warmup_steps": warmup_steps,
        "recommended_steps": recommended,
        "planned_steps": planned,
    }
    cite = f"about min(2/(1−β2), planned/10) = {recommended} steps for β2 = {beta2:g}"
    if warmup_steps == 0:
        trouble = early_trouble(view, steps[0] + recommended)
        severe = peak > HIGH_PEAK_LR or trouble is not None
        because = (
            f" and the loss rose or spiked at step {trouble}"
            if trouble is not None
            else (f" at a high peak LR of {peak:g}" if peak > HIGH_PEAK_LR else "")
        )
        return [
            finding(
                "no-warmup",
                "warning" if severe else "info",
                f"Adam-family optimizer without learning-rate warmup{because}",
                why="The learning rate starts at its peak, while Adam's second-moment estimate is "
                f"unreliable for its first {cite} (Ma & Yarats 2019): the first updates are too "
                "large.",
                remedy=f"Add a linear warmup of about {recommended} steps.",
                step=int(steps[0]),
                early_trouble_step=trouble,
                **evidence,
            )
        ]
    if warmup_steps < SHORT_WARMUP * recommended:
        return [
            finding(
                "short-warmup",
                "warning" if peak > HIGH_PEAK_LR else "info",
                f"Warmup of {warmup_steps} steps is short for β2 = {beta2:g}",
                why=f"Rule of thumb: {cite} (Ma & Yarats 2019); shorter warmups leave the first "
                "full-size updates to a second-moment estimate that is not settled yet.",
                remedy=f"Lengthen the warmup towards {recommended} steps if early loss spikes "
                "appear.",
                step=int(steps[reached]),
                **evidence,
            )
        ]
    return []


def _rising_levels(steps: NDArray[np.int64], lrs: NDArray[np.float64]) -> list[int] | None:
    """The steps where the LR changes during its rise to the peak, when it rises in few jumps."""
    reached = int(np.flatnonzero(lrs >= AT_PEAK * lrs.max())[0])
    rising_steps, rising = steps[: reached + 1], lrs[: reached + 1]
    if rising.size < 2 or rising_steps[-1] - rising_steps[0] < JUMP_RISE_STEPS:
        return None
    changes = np.flatnonzero(np.diff(rising) != 0) + 1
    levels = changes.size + 1
    # Each level must hold several samples, or a short warmup sampled sparsely looks stepped.
    if not changes.size or levels > JUMP_LEVELS or rising.size < 3 * levels:
        return None
    before, after = rising[changes - 1], rising[changes]
    with np.errstate(divide="ignore", invalid="ignore"):
        sizes = np.where(before > 0, np.abs(after - before) / before, np.inf)
    if not (sizes > JUMP_SIZE).all():
        return None
    return [int(s) for s in rising_steps[changes]]


def _per_step(scheduler: Mapping[str, Any] | None) -> bool:
    """Whether the scheduler is meant to be stepped per optimizer step: it has a warmup or a
    length in optimizer steps, or is a one-cycle schedule. (Epoch schedules such as StepLR, or a
    cosine over epochs, are rightly stepped once per epoch.)"""
    if scheduler is None:
        return False
    name = str(scheduler.get("class") or "").lower()
    return bool(
        setup_doc.number(scheduler.get("warmup_steps"))
        or setup_doc.number(scheduler.get("planned_steps"))
        or any(word in name for word in ("onecycle", "warmup"))
    )


@rule("lr-jumps", "A warmup stepped in a few jumps")
def lr_jumps(view: RunView) -> Iterable[Finding]:
    """The LR rising through a few large levels (a scheduler stepped per epoch), or scheduler
    calls lagging far behind optimizer steps."""
    steps, lrs = _lr(view)
    jumps = _rising_levels(steps, lrs)
    scheduler = setup_doc.section(view, "scheduler")
    lag = None
    if jumps is None and _per_step(scheduler) and "sched/calls" in view.summaries:
        call_steps, calls = read_finite(view, "sched/calls")
        span = float(call_steps[-1] - call_steps[0]) if call_steps.size >= 2 else 0.0
        if span >= JUMP_RISE_STEPS and (calls[-1] - calls[0]) < SCHED_LAG * span:
            lag = float((calls[-1] - calls[0]) / span)
    if jumps is None and lag is None:
        return []
    name = scheduler.get("class") if scheduler else None
    what = f"the {name} scheduler" if isinstance(name, str) else "the scheduler"
    if jumps is not None:
        title = f"The learning rate rises in {len(jumps)} jump(s) during warmup"
        why = (
            f"It changes only at steps {', '.join(map(str, jumps[:10]))}: {what} is stepped once "
            "per epoch while its warmup was meant per optimizer step, so each jump is a sudden "
            "large change in step size."
        )
    else:
        title = "The scheduler is stepped far less often than the optimizer"
        why = (
            f"{what.capitalize()} advanced {100 * (lag or 0):.0f} calls per 100 optimizer steps: "
            "a per-step schedule (warmup, cosine) stepped per epoch stretches over many times "
            "the planned run."
        )
    return [
        finding(
            "lr-jumps",
            "warning",
            title,
            why=why,
            remedy="Call scheduler.step() after every optimizer.step(), or give the scheduler "
            "its length in epochs.",
            step=jumps[0] if jumps else int(steps[0]),
            jump_steps=jumps or [],
            calls_per_step=lag,
        )
    ]


@rule("lr-zero", "Learning rate at zero")
def lr_zero(view: RunView) -> Iterable[Finding]:
    """LR zero (or negligible against its peak) for the first steps, or from long before the end
    to the end."""
    steps, lrs = _lr(view)
    found = []
    live = lrs > NEGLIGIBLE_LR * max(float(lrs.max()), 0.0)
    nonzero = np.flatnonzero(live)
    first = int(steps[nonzero[0]]) if nonzero.size else int(steps[-1])
    zero_span = first - int(steps[0])
    run_length = max(1, int(steps[-1] - steps[0]))
    if zero_span > ZERO_START_STEPS and zero_span > ZERO_START_SHARE * run_length and not live[0]:
        found.append(
            finding(
                "lr-zero-start",
                "warning",
                f"The learning rate is zero for the first {zero_span} steps",
                why="Those steps compute gradients and change nothing but optimizer state: a "
                "warmup that starts from 0 and is stepped per epoch, or a schedule offset.",
                remedy="Start the warmup from a small non-zero factor, and step the scheduler "
                "per optimizer step.",
                step=int(steps[0]),
                zero_steps=zero_span,
            )
        )
    if steps.size >= 10:
        zero = np.flatnonzero(~live)
        if zero.size and zero[-1] == lrs.size - 1:
            positive = np.flatnonzero(live)
            start = int(positive[-1]) + 1 if positive.size else 0
            if positive.size and start < (1 - TAIL / 2) * steps.size:
                step = int(steps[start])
                found.append(
                    finding(
                        "lr-zero-early",
                        "warning",
                        f"The learning rate is zero from step {step}",
                        why=f"{steps.size - start} of {steps.size} logged steps train with an LR "
                        f"of 0 or below {NEGLIGIBLE_LR:g} of its peak: "
                        "the schedule's total steps is probably shorter than the run (counted in "
                        "epochs, or stepped per micro-batch).",
                        remedy="Give the scheduler the run's length in optimizer steps.",
                        step=step,
                        zero_samples=int(steps.size - start),
                    )
                )
    return found
