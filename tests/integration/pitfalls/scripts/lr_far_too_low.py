"""SGD at lr 1e-6 (a learning rate meant as 1e-2, typed with the wrong exponent): the weights
barely move and the loss stays where it started."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tests.integration.pitfalls.scripts._data import blobs
from tests.integration.pitfalls.scripts._loop import train_plain

STEPS = 150


def train(url: str, **kw: Any) -> str:
    torch.manual_seed(0)
    x, y = blobs()
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-6)
    before = model[0].weight.detach().clone()
    run_id = train_plain("lr-far-too-low", model, optimizer, x, y, STEPS, url, **kw)

    # The pitfall, in plain torch: the weights moved by a millionth of their size.
    assert (model[0].weight - before).norm() < 1e-4 * before.norm()
    return run_id
