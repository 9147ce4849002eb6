"""BatchNorm layers that normalise with the statistics of very few samples.

A BatchNorm layer in training mode normalises with its batch's mean and variance; under gradient
accumulation that batch is one micro-batch, not the accumulated one. Wu & He 2018 (Group
Normalization, https://arxiv.org/abs/1803.08494, Fig. 1) measure ResNet-50's ImageNet error with
BatchNorm rising as the per-GPU batch shrinks, from 23.6 % at 32 images per GPU, steeply below
8, to 34.7 % at 2, while GroupNorm stays at about 24 %. The agent reports, on due steps, the
fewest samples a BatchNorm layer's statistics came from in one forward (``bn/batch_size/<module>``,
counting every rank of a ``SyncBatchNorm``).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from trickscope_server.services.health.model import (
    Finding,
    NotApplicable,
    RunView,
    Severity,
    finding,
    rule,
)
from trickscope_server.services.health.series import read_finite, with_prefix

SMALL = 4  # at most this many samples: BatchNorm's statistics are mostly noise (warning)
MODEST = 15  # 5-15 samples: measurably worse than 32 in Wu & He 2018 (info)


def _smallest(view: RunView) -> tuple[str, float, int] | None:
    """The module whose typical (median) batch is smallest, that median, and the first step it
    was at most that size; ties go to the first module in model order."""
    best: tuple[str, float, int] | None = None
    for module in with_prefix(view, "bn/batch_size/"):
        steps, sizes = read_finite(view, f"bn/batch_size/{module}")
        if sizes.size == 0:
            continue
        # The median over due steps: an epoch's short last batch landing on one is no pattern.
        median = float(np.median(sizes))
        if best is None or median < best[1]:
            best = (module, median, int(steps[sizes <= median][0]))
    return best


@rule("batchnorm", "Samples behind BatchNorm's batch statistics")
def batchnorm_batch(view: RunView) -> Iterable[Finding]:
    """BatchNorm trained on at most :data:`SMALL` samples per forward (warning), or at most
    :data:`MODEST` (info); under accumulation the micro-batch is what counts."""
    smallest = _smallest(view)
    if smallest is None:
        raise NotApplicable("no BatchNorm layer was seen training with batch statistics")
    module, size, step = smallest
    if size > MODEST:
        return []
    _, passes = read_finite(view, "accum/backward_passes")
    micro = float(np.median(passes)) if passes.size else 1.0
    accumulating = micro > 1
    severity: Severity = "warning" if size <= SMALL else "info"
    why = (
        f"{module} normalises each training forward with the mean and variance of {size:g} "
        "samples. Statistics of so few samples are noisy and differ from the running "
        "statistics used in eval: Wu & He 2018 report ResNet-50's ImageNet error with "
        "BatchNorm at 23.6 % for 32 images per GPU and 34.7 % for 2."
    )
    if accumulating:
        why += (
            f" Gradients are accumulated over {micro:g} backward passes, but BatchNorm's "
            "statistics are per micro-batch: the accumulated batch of "
            f"{size * micro:g} samples does not help them."
        )
    remedy = (
        "Use a larger micro-batch (fewer accumulation steps), replace BatchNorm with GroupNorm "
        "or LayerNorm, use SyncBatchNorm across ranks, or freeze BatchNorm (eval mode for its "
        "modules) when fine-tuning from pretrained statistics."
    )
    title = f"BatchNorm in {module} trains on {size:g}-sample " + (
        "micro-batches" if accumulating else "batches"
    )
    return [
        finding(
            "batchnorm-small-batch",
            severity,
            title,
            why=why,
            remedy=remedy,
            step=step,
            layer=module,
            batch_size=size,
            backward_passes=micro,
            accumulated_batch=size * micro,
        )
    ]
