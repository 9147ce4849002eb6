"""A head defined and handed to the optimizer but never called in ``forward`` (left over from a
refactor): its parameters never get a gradient and never train."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import trickscope
from tests.integration.pitfalls.scripts._data import batches, blobs

STEPS = 120


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(20, 64)
        self.fc2 = nn.Linear(64, 64)
        self.aux_head = nn.Linear(64, 4)  # meant for an auxiliary loss that was dropped
        self.head = nn.Linear(64, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.fc2(F.relu(self.fc1(x)))))


def train(url: str, **kw: Any) -> str:
    torch.manual_seed(0)
    x, y = blobs()
    model = Net()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    with trickscope.init(project="pitfalls", name="no-gradient", url=url, **kw) as run:
        run.watch(model, optimizer)
        data = batches(x, y, 64)
        for step in range(STEPS):
            xb, yb = next(data)
            loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            run.log({"loss": loss.detach()}, step=step)

    # The pitfall, in plain torch: trainable, in the optimizer, and never a gradient.
    assert model.aux_head.weight.requires_grad and model.aux_head.weight.grad is None
    assert model.head.weight.grad is not None
    return run.id
