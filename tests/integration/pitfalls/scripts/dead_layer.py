"""A residual MLP whose inner Linear has a very negative bias: its ReLU never fires, so that
Linear's gradient is exactly zero on every step and it never learns (the rest of the network
trains through the residual path)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import trickscope
from tests.integration.pitfalls.scripts._data import batches, blobs

STEPS = 150


class Net(nn.Module):
    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.fc1 = nn.Linear(20, width)
        self.fc2 = nn.Linear(width, width)
        self.head = nn.Linear(width, 4)
        with torch.no_grad():
            self.fc2.bias.fill_(-100.0)  # e.g. a bad init or a blown-up bias: always below 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.fc1(x))
        return self.head(h + F.relu(self.fc2(h)))


def train(url: str, **kw: Any) -> str:
    torch.manual_seed(0)
    x, y = blobs()
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    dead_steps = 0
    with trickscope.init(project="pitfalls", name="dead-layer", url=url, **kw) as run:
        run.watch(model, optimizer)
        data = batches(x, y, 64)
        for step in range(STEPS):
            xb, yb = next(data)
            loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            dead_steps += int(not model.fc2.weight.grad.any())
            assert model.fc1.weight.grad.any()  # only fc2 is dead
            optimizer.step()
            run.log({"loss": loss.detach()}, step=step)

    # The pitfall, in plain torch: fc2's gradient was exactly zero on every step.
    assert dead_steps == STEPS
    return run.id
