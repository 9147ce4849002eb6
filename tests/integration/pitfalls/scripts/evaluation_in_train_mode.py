"""An evaluation under ``torch.no_grad()`` without ``model.eval()``: dropout still drops, and
BatchNorm normalises each evaluation batch by itself and adds it to its running statistics."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import trickscope
from tests.integration.pitfalls.scripts._data import batches, blobs

STEPS = 120
EVAL_EVERY = 40


def train(url: str, **kw: Any) -> str:
    torch.manual_seed(0)
    x, y = blobs()
    model = nn.Sequential(nn.Linear(20, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Dropout(0.2),
                          nn.Linear(64, 4))  # fmt: skip
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scores = []
    with trickscope.init(project="pitfalls", name="evaluation-in-train-mode", url=url, **kw) as run:
        run.watch(model, optimizer)
        data = batches(x, y, 64)
        for step in range(STEPS):
            xb, yb = next(data)
            loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            run.log({"loss": loss.detach()}, step=step)
            if (step + 1) % EVAL_EVERY == 0:
                with torch.no_grad():  # the pitfall: no model.eval() around the evaluation
                    scores.append((model(x).argmax(1) == y).float().mean())
                run.log({"eval/acc": scores[-1]}, step=step)

    # The pitfall, in plain torch: the model was in training mode at every evaluation.
    assert model.training and len(scores) == STEPS // EVAL_EVERY
    return run.id
