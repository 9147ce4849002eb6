"""An evaluation after the first epoch switches the model to eval mode and nothing switches it
back: the rest of the run trains with dropout off and BatchNorm's running statistics frozen."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import trickscope
from tests.integration.pitfalls.scripts._data import batches, blobs

EPOCHS = 4
STEPS_PER_EPOCH = 40


def train(url: str, **kw: Any) -> str:
    torch.manual_seed(0)
    x, y = blobs()
    model = nn.Sequential(nn.Linear(20, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Dropout(0.2),
                          nn.Linear(64, 4))  # fmt: skip
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    with trickscope.init(project="pitfalls", name="training-in-eval-mode", url=url, **kw) as run:
        run.watch(model, optimizer)
        data = batches(x, y, 64)
        model.train()
        step = 0
        for _ in range(EPOCHS):
            for _ in range(STEPS_PER_EPOCH):
                xb, yb = next(data)
                loss = F.cross_entropy(model(xb), yb)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                run.log({"loss": loss.detach()}, step=step)
                step += 1
            model.eval()  # the pitfall: no model.train() before the next epoch
            with torch.no_grad():
                accuracy = (model(x).argmax(1) == y).float().mean()
            run.log({"eval/acc": accuracy}, step=step - 1)

    # The pitfall, in plain torch: the model ends in eval mode after training in it.
    assert not model.training
    return run.id
