"""An evaluation under ``torch.no_grad()`` without ``model.eval()``: dropout still drops, and
BatchNorm normalises each evaluation batch by itself and adds it to its running statistics."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

import trickscope
from tests.integration.pitfalls.scripts._data import blobs
from tests.integration.pitfalls.scripts._loop import train_plain

STEPS = 120
EVAL_EVERY = 40


def train(url: str, **kw: Any) -> str:
    torch.manual_seed(0)
    x, y = blobs()
    model = nn.Sequential(nn.Linear(20, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Dropout(0.2),
                          nn.Linear(64, 4))  # fmt: skip
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    modes = []

    def evaluate(step: int, run: trickscope.Run) -> None:
        if (step + 1) % EVAL_EVERY == 0:
            modes.append(model.training)
            with torch.no_grad():  # the pitfall: no model.eval() around the evaluation
                run.log({"eval/acc": (model(x).argmax(1) == y).float().mean()}, step=step)

    run_id = train_plain(
        "evaluation-in-train-mode", model, optimizer, x, y, STEPS, url, evaluate, **kw
    )

    # The pitfall, in plain torch: the model was in training mode at every evaluation.
    assert modes == [True] * (STEPS // EVAL_EVERY)
    return run_id
