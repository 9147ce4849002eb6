"""Evaluate the raw model and its EMA on the same batches at the same step.

Tarvainen & Valpola 2017 (https://arxiv.org/abs/1703.01780) compare the averaged and the raw
weights; doing it on identical batches makes the difference the EMA's alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from trickscope.tricks._sink import Metric, MetricSink, report
from trickscope.tricks.ema import ema_module

EvalFn = Callable[[nn.Module, Any], Mapping[str, "torch.Tensor | float"]]
_RENAME = {"correct": "acc", "loss_sum": "loss"}


def evaluate_raw_and_ema(
    model: nn.Module,
    ema_model: nn.Module,
    batches: Iterable[Any],
    eval_fn: EvalFn,
    run: MetricSink | None = None,
    step: int | None = None,
) -> dict[str, Metric]:
    """Run ``model`` and its EMA on the same batches and report both.

    ``eval_fn(model, batch)`` returns per-batch sums, as tensors or numbers: ``count`` (samples)
    and any of ``correct`` and ``loss_sum``; every other key is averaged per sample too. Sums stay
    on the device. Reports ``eval/acc_raw``, ``eval/acc_ema``, ``eval/loss_raw``,
    ``eval/loss_ema`` (and ``eval/{key}_raw|ema`` for other keys). Both models run in eval mode
    under ``torch.no_grad``; each module's training flag is restored afterwards.

    Args:
        model: The trained model.
        ema_model: Anything :func:`~trickscope.tricks.ema.ema_module` accepts.
        batches: Iterated once; each batch goes to both models.
        eval_fn: Computes per-batch sums for one model.
        run: Receives the metrics.
        step: The global optimizer step of the evaluation.

    Returns:
        The reported metrics.
    """
    models = {"raw": model, "ema": ema_module(ema_model)}
    modes = {tag: [(m, m.training) for m in mod.modules()] for tag, mod in models.items()}
    sums: dict[str, dict[str, Any]] = {"raw": {}, "ema": {}}
    try:
        for module in models.values():
            module.eval()
        with torch.no_grad():
            for batch in batches:
                for tag, module in models.items():
                    for key, value in eval_fn(module, batch).items():
                        total = sums[tag].get(key)
                        sums[tag][key] = value if total is None else total + value
    finally:
        for saved in modes.values():
            for module, training in saved:
                module.training = training
    metrics: dict[str, Metric] = {}
    for tag, totals in sums.items():
        if "count" not in totals:
            if totals:
                raise ValueError(f"eval_fn must return a 'count' key, got {sorted(totals)}")
            continue
        count = totals.pop("count")
        for key, total in totals.items():
            metrics[f"eval/{_RENAME.get(key, key)}_{tag}"] = total / count
    report(run, metrics, step)
    return metrics
