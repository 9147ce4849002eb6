"""Distributed runs: replicas whose gradients or weights part from rank 0's, and stragglers."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from trickscope_server.services.health.model import Finding, NotApplicable, RunView, finding, rule

REPLICA_TOLERANCE = 1e-5  # relative: DDP replicas agree to the last bit, this allows mixed kernels
STRAGGLER_FACTOR = 2.0  # a rank's input wait against the other ranks' typical wait
STRAGGLER_SHARE = 0.1  # ... and its excess as a share of the step, below which it is noise
STRAGGLER_SECONDS = 0.005  # ... and in absolute terms: on millisecond steps, scheduling jitter


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


@rule("replicas", "Replicas of a distributed run in step")
def replicas(view: RunView) -> Iterable[Finding]:
    """Ranks of a distributed run whose gradients or weights part from rank 0's."""
    if not _by_rank(view, "grad_norm") and not _by_rank(view, "weight_norm"):
        raise NotApplicable("not a distributed run (no per-rank norms)")
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
            remedy = (
                "Let the last micro-batch of each step run outside no_sync(), keep every trained "
                "parameter inside the DDP wrapper, and change gradients only before backward."
            )
        else:
            why = (
                "Their gradients agree, so something changed these weights outside the optimizer "
                "step on some ranks only: an edit in rank-dependent code, a checkpoint loaded on "
                "one rank, or a buffer-like parameter set per rank. DDP never re-synchronises "
                "parameters after wrapping, so the difference stays."
            )
            remedy = (
                "Load checkpoints and edit weights on every rank alike (or broadcast from rank 0 "
                "afterwards)."
            )
        yield finding(
            check,
            "error",
            f"{what} of {_ranks_text(ranks)} differ from rank 0's from step {step}",
            why=why,
            remedy=remedy,
            step=step,
            ranks=ranks,
            first_steps={str(rank): first for rank, first in firsts.items()},
        )
        return  # differing gradients explain differing weights: one finding is the cause


def _finite_median(view: RunView, name: str) -> float | None:
    """The median of a series' finite values, or ``None`` when it has none."""
    values = view.series(name)[1]
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else None


@rule("stragglers", "Ranks waiting on their input")
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
        raise NotApplicable("not a distributed run (no per-rank input and step times)")
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
        yield finding(
            "straggler",
            "warning",
            f"Rank {slow} waits {1000 * waits[slow]:.0f} ms per step for its input, against "
            f"{1000 * typical:.0f} ms on the other ranks",
            why=f"Every rank waits for the slowest at the gradient all-reduce, so this costs the "
            f"whole job about {100 * excess / step_time:.0f}% of each {1000 * step_time:.0f} ms "
            "step.",
            remedy="Give that rank's DataLoader more workers (or pin_memory and prefetching), and "
            f"look for a slower disk or a busier host {where}.",
            rank=slow,
            wait_s=waits[slow],
            typical_wait_s=typical,
            step_time_s=step_time,
        )
