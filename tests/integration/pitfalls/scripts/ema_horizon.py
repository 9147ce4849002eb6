"""torch's AveragedModel EMA with decay 0.9999 on a 200-step run: its horizon 1/(1−α) is 10,000
steps, so at the end the EMA is still close to the weights it started from."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

import trickscope
from tests.integration.pitfalls.scripts._data import batches, blobs

STEPS = 200


def _flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def train(url: str, **kw: Any) -> str:
    torch.manual_seed(0)
    x, y = blobs()
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                          nn.Linear(64, 4))  # fmt: skip
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9999))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    start = _flat(model)

    with trickscope.init(project="pitfalls", name="ema-horizon", url=url, **kw) as run:
        run.watch(model, optimizer)
        data = batches(x, y, 64)
        for step in range(STEPS):
            xb, yb = next(data)
            loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            ema.update_parameters(model)
            run.log({"loss": loss.detach()}, step=step)

    # The pitfall, in plain torch: the EMA moved < 5 % of the way the raw weights moved.
    raw_moved = (_flat(model) - start).norm()
    ema_moved = (_flat(ema.module) - start).norm()
    assert ema_moved < 0.05 * raw_moved, (float(ema_moved), float(raw_moved))
    return run.id
