"""A loop without ``optimizer.zero_grad()``: every backward adds to the gradients of all the
steps before it, so each step applies their running sum."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import trickscope
from tests.integration.pitfalls.scripts._data import batches, blobs

STEPS = 100


def train(url: str, **kw: Any) -> str:
    torch.manual_seed(0)
    x, y = blobs()
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    norms = []
    with trickscope.init(project="pitfalls", name="gradients-not-zeroed", url=url, **kw) as run:
        run.watch(model, optimizer)
        data = batches(x, y, 64)
        for step in range(STEPS):
            xb, yb = next(data)
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()  # the pitfall: no zero_grad() anywhere in the loop
            norms.append(float(model[0].weight.grad.norm()))
            optimizer.step()
            run.log({"loss": loss.detach()}, step=step)

    # The pitfall, in plain torch: the gradient is a running sum, far above one batch's.
    assert norms[-1] > 5 * norms[0]
    return run.id
