"""Weights drawn with ``nn.init.normal_`` at its default std of 1: each 64-wide layer multiplies
its activations by about √64 = 8, so a deep stack saturates before training starts."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tests.integration.pitfalls.scripts._data import blobs
from tests.integration.pitfalls.scripts._loop import train_plain

STEPS = 60


def train(url: str, **kw: Any) -> str:
    torch.manual_seed(0)
    x, y = blobs()
    model = nn.Sequential(nn.Linear(20, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(),
                          nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 4))  # fmt: skip
    for layer in model:
        if isinstance(layer, nn.Linear):
            nn.init.normal_(layer.weight)  # the pitfall: std=1, whatever the fan-in
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    run_id = train_plain("init-too-large", model, optimizer, x, y, STEPS, url, **kw)

    # The pitfall, in plain torch: the hidden tanh units are saturated.
    with torch.no_grad():
        hidden = model[:4](x)
    assert (hidden.abs() > 0.99).float().mean() > 0.5
    return run_id
