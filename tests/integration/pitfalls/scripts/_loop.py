"""The plain training loop that scripts whose pitfall is in the setup (not the loop) share:
the default attach, cross-entropy, one optimizer step per batch, the loss logged each step."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

import trickscope
from tests.integration.pitfalls.scripts._data import batches


def train_plain(
    name: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int,
    url: str,
    **kw: Any,
) -> str:
    """Train ``steps`` steps attached with ``init`` + ``watch(model, optimizer)``; the run id."""
    with trickscope.init(project="pitfalls", name=name, url=url, **kw) as run:
        run.watch(model, optimizer)
        data = batches(x, y, 64)
        for step in range(steps):
            xb, yb = next(data)
            loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            run.log({"loss": loss.detach()}, step=step)
    return run.id
