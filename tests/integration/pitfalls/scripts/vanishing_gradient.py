"""A deep sigmoid MLP initialised with tiny weights (std 0.01): each layer multiplies the
backward signal by ~σ'·‖W‖ ≈ 0.25 × 0.06, so the first layers get gradients ~1e-13 and never
learn."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import trickscope
from tests.integration.pitfalls.scripts._data import batches, blobs

STEPS = 100
DEPTH = 8


def build(width: int = 32) -> nn.Sequential:
    layers: list[nn.Module] = []
    fan_in = 20
    for _ in range(DEPTH):
        linear = nn.Linear(fan_in, width)
        nn.init.normal_(linear.weight, std=0.01)  # the pitfall: far below Xavier's ~0.2
        layers += [linear, nn.Sigmoid()]
        fan_in = width
    return nn.Sequential(*layers, nn.Linear(width, 4))


def train(url: str, **kw: Any) -> str:
    torch.manual_seed(0)
    x, y = blobs()
    model = build()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    with trickscope.init(project="pitfalls", name="vanishing-gradient", url=url, **kw) as run:
        run.watch(model, optimizer)
        data = batches(x, y, 64)
        for step in range(STEPS):
            xb, yb = next(data)
            loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            first, last = model[0].weight.grad.norm(), model[-1].weight.grad.norm()
            optimizer.step()
            run.log({"loss": loss.detach()}, step=step)

    # The pitfall, in plain torch: the first layer's gradient is ~1e-10 of the last one's,
    # and the model never leaves chance level.
    assert 0 < first < 1e-9 * last, (float(first), float(last))
    assert float(loss.detach()) > 1.2
    return run.id
