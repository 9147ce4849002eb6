"""Training steps taken with the model in eval mode, and evaluations run in training mode.

Dropout and DropPath do nothing in eval mode and BatchNorm normalises with frozen running
statistics. ``model.eval()`` for an evaluation without ``model.train()`` after it leaves the rest
of the run training that way; the agent reads the modules' ``training`` flags on due steps.
Frozen BatchNorm from the first step is a fine-tuning recipe, not a mistake; dropout switched
off from the first step is not. The other way round, forwards without gradients (an evaluation)
with the model in training mode score a dropped-out model and feed the evaluation batches into
BatchNorm's running statistics.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from trickscope_server.services.health.model import Finding, NotApplicable, RunView, finding, rule
from trickscope_server.services.health.series import read_finite

KINDS = {"dropout": "dropout and DropPath", "batchnorm": "BatchNorm"}


def _left_in_eval(view: RunView, kind: str) -> tuple[int, bool] | None:
    """(first step in eval mode, whether it was in training mode before) when the modules of
    ``kind`` are all in eval mode at the last sample."""
    steps, shares = read_finite(view, f"mode/{kind}_training")
    if not shares.size or shares[-1] > 0:
        return None
    trained = np.flatnonzero(shares > 0)
    if not trained.size:
        return int(steps[0]), False
    return int(steps[trained[-1] + 1]), True


@rule("train-mode", "Training steps taken in eval mode")
def train_mode(view: RunView) -> Iterable[Finding]:
    """Dropout-like or BatchNorm modules all in eval mode at the run's last due steps after
    training in training mode, or dropout in eval mode from the start."""
    kinds = [k for k in KINDS if f"mode/{k}_training" in view.summaries]
    if not kinds:
        raise NotApplicable("the model has no dropout, DropPath or BatchNorm modules")
    found = {k: _left_in_eval(view, k) for k in kinds}
    flipped = [(v[0], k) for k, v in found.items() if v is not None and v[1]]
    never = found.get("dropout")
    if flipped:
        step, kind = min(flipped)
        title = f"Training continued in eval mode from step {step}"
        why = (
            f"The model's {KINDS[kind]} modules were in training mode earlier and are in eval "
            f"mode on every due step since step {step}: model.eval() (for an evaluation) was not "
            "followed by model.train(), so dropout no longer regularises and BatchNorm "
            "normalises with frozen statistics."
        )
    elif never is not None:
        step = never[0]
        title = "Dropout is switched off for the whole run"
        why = (
            "Every dropout and DropPath module is in eval mode on every due step: the model was "
            "put in eval mode before training (model.eval()), so they never drop anything."
        )
    else:
        return []
    return [
        finding(
            "training-in-eval-mode",
            "warning",
            title,
            why=why,
            remedy="Call model.train() before the training steps (after every evaluation).",
            step=step,
            kinds=sorted(k for k, v in found.items() if v is not None),
        )
    ]


@rule("eval-mode", "Evaluations run in eval mode")
def eval_mode(view: RunView) -> Iterable[Finding]:
    """Forwards without gradients while the model (with dropout or BatchNorm) is in training
    mode: ``torch.no_grad()`` without ``model.eval()``."""
    steps, counts = read_finite(view, "mode/nograd_training_forwards")
    if not counts.size:
        raise NotApplicable("the model has no dropout, DropPath or BatchNorm modules")
    hits = np.flatnonzero(counts > 0)
    if not hits.size:
        return []
    step = int(steps[hits[0]])
    return [
        finding(
            "evaluation-in-train-mode",
            "warning",
            f"The model ran without gradients in training mode ({int(counts.sum())} forwards)",
            why="A forward under torch.no_grad() is an evaluation, but the model was in training "
            f"mode (first seen by step {step}): dropout and DropPath still drop, so the scores "
            "are of a noisier model, and BatchNorm normalises each evaluation batch by itself "
            "and adds it to its running statistics.",
            remedy="Call model.eval() before evaluating and model.train() after.",
            step=step,
            forwards=int(counts.sum()),
        )
    ]
