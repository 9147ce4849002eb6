"""One NaN written into fc2's weights at step 60 (a bad checkpoint patch, an in-place op gone
wrong): from that forward on the loss and every gradient are NaN."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import trickscope
from tests.integration.pitfalls.scripts._data import batches, blobs

STEPS = 80
NAN_AT = 60


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(20, 64)
        self.fc2 = nn.Linear(64, 64)
        self.fc3 = nn.Linear(64, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


def train(url: str, **kw: Any) -> str:
    torch.manual_seed(0)
    x, y = blobs()
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    losses = []
    with trickscope.init(project="pitfalls", name="nonfinite-weight", url=url, **kw) as run:
        run.watch(model, optimizer)
        data = batches(x, y, 64)
        for step in range(STEPS):
            if step == NAN_AT:
                with torch.no_grad():
                    model.fc2.weight[0, 0] = float("nan")
            xb, yb = next(data)
            loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            run.log({"loss": loss.detach()}, step=step)

    # The pitfall, in plain torch: finite up to step 59, NaN from step 60 on.
    assert all(math.isfinite(v) for v in losses[:NAN_AT])
    assert all(math.isnan(v) for v in losses[NAN_AT:])
    return run.id
