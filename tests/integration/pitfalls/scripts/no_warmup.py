"""Adam at lr 1e-2 from the first step: its second moment is estimated from a handful of
gradients while the steps are at full size (Ma & Yarats 2019 ask for ~2/(1−β2) warmup steps)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import trickscope
from tests.integration.pitfalls.scripts._data import batches, blobs

STEPS = 200
LR = 1e-2


def train(url: str, **kw: Any) -> str:
    torch.manual_seed(0)
    x, y = blobs()
    model = nn.Sequential(nn.Linear(20, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(),
                          nn.Linear(128, 4))  # fmt: skip
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)

    lrs = []
    with trickscope.init(project="pitfalls", name="no-warmup", url=url, **kw) as run:
        run.watch(model, optimizer)
        data = batches(x, y, 64)
        for step in range(STEPS):
            xb, yb = next(data)
            loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            run.log({"loss": loss.detach()}, step=step)

    # The pitfall, in plain torch: the full LR from step 0, never ramped.
    assert lrs[0] == LR and all(lr == LR for lr in lrs)
    return run.id
