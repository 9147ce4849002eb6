"""``clip_grad_norm_`` called on every step with max_norm=1e4 where the gradient norm is ~1: the
threshold is thousands of times above any norm the run has, so the clip is dead code and no
gradient spike would ever be caught."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import trickscope
from tests.integration.pitfalls.scripts._data import batches, blobs

STEPS = 150
MAX_NORM = 1e4


def train(url: str, **kw: Any) -> str:
    torch.manual_seed(0)
    x, y = blobs(spread=0.6)
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                          nn.Linear(64, 4))  # fmt: skip
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    norms = []
    with trickscope.init(project="pitfalls", name="clipping-never", url=url, **kw) as run:
        run.watch(model, optimizer)
        data = batches(x, y, 64)
        for step in range(STEPS):
            xb, yb = next(data)
            loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            norms.append(torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM))
            optimizer.step()
            run.log({"loss": loss.detach()}, step=step)

    # The pitfall, in plain torch: no norm came within a hundredth of the threshold.
    assert float(torch.stack(norms).max()) < MAX_NORM / 100
    return run.id
