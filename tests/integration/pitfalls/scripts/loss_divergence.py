"""SGD + momentum at lr 1.0, far too high for this MLP: the loss first falls, then the steps
overshoot, the loss climbs by orders of magnitude and ends non-finite."""

from __future__ import annotations

import math
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
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                          nn.Linear(64, 4))  # fmt: skip
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0, momentum=0.9)

    losses = []
    with trickscope.init(project="pitfalls", name="loss-divergence", url=url, **kw) as run:
        run.watch(model, optimizer)
        data = batches(x, y, 64)
        for step in range(STEPS):
            xb, yb = next(data)
            loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            run.log({"loss": loss.detach()}, step=step)

    # The pitfall, in plain torch: it learned, then rose far above its start and went NaN.
    assert min(losses[:10]) < 0.5 * losses[0]
    assert max(v for v in losses if math.isfinite(v)) > 100 * losses[0]
    assert not math.isfinite(losses[-1])
    return run.id
