"""``clipping_never`` with the clip in a helper the loop calls before ``optimizer.step()``, its
max_norm=1e4 passed from a config: by the step the helper's frame is gone, so the threshold is
read by following the loop's call into the helper's source."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import clip_grad_norm_

import trickscope
from tests.integration.pitfalls.scripts._data import batches, blobs

STEPS = 150
CONFIG = SimpleNamespace(max_norm=1e4)


def clip_gradients(model: nn.Module, max_norm: float) -> torch.Tensor:
    return clip_grad_norm_(model.parameters(), max_norm)


def train(url: str, **kw: Any) -> str:
    torch.manual_seed(0)
    x, y = blobs(spread=0.6)
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                          nn.Linear(64, 4))  # fmt: skip
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    norms = []
    with trickscope.init(project="pitfalls", name="clipping-never-helper", url=url, **kw) as run:
        run.watch(model, optimizer)
        data = batches(x, y, 64)
        for step in range(STEPS):
            xb, yb = next(data)
            loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            norms.append(clip_gradients(model, CONFIG.max_norm))
            optimizer.step()
            run.log({"loss": loss.detach()}, step=step)

    # The pitfall, in plain torch: no norm came within a hundredth of the threshold.
    assert float(torch.stack(norms).max()) < CONFIG.max_norm / 100
    return run.id
