"""An EMA created and evaluated but never updated (``ema.update_parameters(model)`` forgotten):
it stays the initial weights, and its evaluation is that of an untrained model."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

import trickscope
from tests.integration.pitfalls.scripts._data import batches, blobs

STEPS = 150


def train(url: str, **kw: Any) -> str:
    torch.manual_seed(0)
    x, y = blobs()
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                          nn.Linear(64, 4))  # fmt: skip
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.99))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    start = [p.detach().clone() for p in ema.parameters()]

    with trickscope.init(project="pitfalls", name="ema-not-updated", url=url, **kw) as run:
        run.watch(model, optimizer)
        data = batches(x, y, 64)
        for step in range(STEPS):
            xb, yb = next(data)
            loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            run.log({"loss": loss.detach()}, step=step)  # the pitfall: no ema.update_parameters
        with torch.no_grad():
            ema_loss = F.cross_entropy(ema(x), y)  # the EMA evaluated, as the user meant
        run.log({"eval/loss": ema_loss}, step=STEPS - 1)

    # The pitfall, in plain torch: the EMA's weights are exactly the initial ones.
    assert all(torch.equal(p, q) for p, q in zip(ema.parameters(), start, strict=True))
    return run.id
