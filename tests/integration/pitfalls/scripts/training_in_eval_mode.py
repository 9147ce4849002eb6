"""An evaluation after the first epoch switches the model to eval mode and nothing switches it
back: the rest of the run trains with dropout off and BatchNorm's running statistics frozen."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

import trickscope
from tests.integration.pitfalls.scripts._data import blobs
from tests.integration.pitfalls.scripts._loop import train_plain

STEPS_PER_EPOCH = 40
STEPS = 4 * STEPS_PER_EPOCH


def train(url: str, **kw: Any) -> str:
    torch.manual_seed(0)
    x, y = blobs()
    model = nn.Sequential(nn.Linear(20, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Dropout(0.2),
                          nn.Linear(64, 4))  # fmt: skip
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    def evaluate(step: int, run: trickscope.Run) -> None:
        if (step + 1) % STEPS_PER_EPOCH == 0:
            model.eval()  # the pitfall: no model.train() before the next epoch
            with torch.no_grad():
                run.log({"eval/acc": (model(x).argmax(1) == y).float().mean()}, step=step)

    run_id = train_plain(
        "training-in-eval-mode", model, optimizer, x, y, STEPS, url, evaluate, **kw
    )

    # The pitfall, in plain torch: the model ends in eval mode after training in it.
    assert not model.training
    return run_id
