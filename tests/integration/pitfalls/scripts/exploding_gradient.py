"""Regression on unnormalised targets with SGD + momentum at an LR past the stability edge and
no clipping: after a few tens of steps the oscillation feeds on itself and the gradient norm
blows up by orders of magnitude within a handful of steps (then overflows)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import trickscope
from tests.integration.pitfalls.scripts._data import batches

STEPS = 60


def train(url: str, **kw: Any) -> str:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1024, 20, generator=gen)
    y = x @ torch.randn(20, 1, generator=gen) + 0.1 * torch.randn(1024, 1, generator=gen)
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                          nn.Linear(64, 1))  # fmt: skip
    optimizer = torch.optim.SGD(model.parameters(), lr=0.08, momentum=0.9)

    norms = []
    with trickscope.init(project="pitfalls", name="exploding-gradient", url=url, **kw) as run:
        run.watch(model, optimizer)
        data = batches(x, y, 64)
        for step in range(STEPS):
            xb, yb = next(data)
            loss = F.mse_loss(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            norms.append(torch.cat([p.grad.flatten() for p in model.parameters()]).norm())
            optimizer.step()
            run.log({"loss": loss.detach()}, step=step)

    # The pitfall, in plain torch: from a few units in the first steps to > 1,000× that
    # (still finite) within the first 30 steps.
    norms_t = torch.stack(norms)
    early = norms_t[:5].median()
    assert torch.isfinite(norms_t[:25]).all()
    assert (norms_t[:30][torch.isfinite(norms_t[:30])] > 1000 * early).any(), norms_t[:30]
    return run.id
