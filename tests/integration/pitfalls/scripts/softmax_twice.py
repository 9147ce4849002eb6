"""A classifier that ends in ``nn.Softmax`` trained with ``F.cross_entropy``, which applies its
own softmax: the probabilities are taken as logits."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tests.integration.pitfalls.scripts._data import blobs
from tests.integration.pitfalls.scripts._loop import train_plain

STEPS = 100


def train(url: str, **kw: Any) -> str:
    torch.manual_seed(0)
    x, y = blobs()
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 4), nn.Softmax(dim=1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    run_id = train_plain("softmax-twice", model, optimizer, x, y, STEPS, url, **kw)

    # The pitfall, in plain torch: the output rows are probabilities.
    with torch.no_grad():
        out = model(x)
    assert out.min() >= 0 and torch.allclose(out.sum(1), torch.ones(len(x)))
    return run_id
