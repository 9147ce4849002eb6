"""A LinearLR warmup meant per step but stepped once per epoch: the LR climbs in five jumps,
each held flat for a whole epoch, instead of a ramp."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import trickscope
from tests.integration.pitfalls.scripts._data import batches, blobs

EPOCHS = 10
STEPS_PER_EPOCH = 20  # 1280 samples / 64
WARMUP_EPOCHS = 5


def train(url: str, **kw: Any) -> str:
    torch.manual_seed(0)
    x, y = blobs(n=1280)
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                          nn.Linear(64, 4))  # fmt: skip
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LinearLR(
        optimizer, start_factor=0.1, total_iters=WARMUP_EPOCHS
    )

    lrs = []
    with trickscope.init(project="pitfalls", name="lr-jumps", url=url, **kw) as run:
        run.watch(model, optimizer)
        data = batches(x, y, 64)
        step = 0
        for _ in range(EPOCHS):
            for _ in range(STEPS_PER_EPOCH):
                xb, yb = next(data)
                loss = F.cross_entropy(model(xb), yb)
                optimizer.zero_grad()
                loss.backward()
                lrs.append(optimizer.param_groups[0]["lr"])
                optimizer.step()
                run.log({"loss": loss.detach()}, step=step)
                step += 1
            scheduler.step()  # the pitfall: per epoch

    # The pitfall, in plain torch: during warmup the LR takes 5 values, each for a whole epoch.
    warmup = lrs[: WARMUP_EPOCHS * STEPS_PER_EPOCH]
    assert len(set(warmup)) == WARMUP_EPOCHS
    epochs = [warmup[e : e + STEPS_PER_EPOCH] for e in range(0, len(warmup), STEPS_PER_EPOCH)]
    assert all(len(set(epoch)) == 1 for epoch in epochs)
    return run.id
