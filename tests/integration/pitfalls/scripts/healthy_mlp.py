"""An MLP with SGD + momentum, per-step cosine decay, gradient accumulation over 4 micro-batches
with the loss divided by 4, and clip_grad_norm_ at a threshold that only catches outliers."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import trickscope
from tests.integration.pitfalls.scripts._data import batches, blobs

STEPS = 150
ACCUMULATION = 4
MICRO_BATCH = 16
MAX_NORM = 5.0


def train(url: str, **kw: Any) -> str:
    torch.manual_seed(0)
    x, y = blobs(spread=0.6)
    model = nn.Sequential(nn.Linear(20, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(),
                          nn.Linear(128, 4))  # fmt: skip
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=STEPS)

    clipped = 0
    with trickscope.init(project="healthy", name="mlp", url=url, **kw) as run:
        run.watch(model, optimizer)
        data = batches(x, y, MICRO_BATCH)
        for step in range(STEPS):
            optimizer.zero_grad()
            for _ in range(ACCUMULATION):
                xb, yb = next(data)
                loss = F.cross_entropy(model(xb), yb) / ACCUMULATION
                loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)
            clipped += int(norm > MAX_NORM)
            optimizer.step()
            scheduler.step()
            run.log({"loss": loss.detach() * ACCUMULATION}, step=step)
        with torch.no_grad():
            acc = (model(x).argmax(1) == y).float().mean()

    # Healthy in plain torch: the clip caught a few outliers at most, and the model learned.
    assert clipped < 0.1 * STEPS, clipped
    assert float(acc) > 0.9, float(acc)
    return run.id
