"""The plain training loop that scripts whose pitfall is in the setup (not the loop) share:
the default attach, cross-entropy, one optimizer step per batch, the loss logged each step, and
an optional callback after each step for what a script adds there (a scheduler, an EMA, an
evaluation)."""

from __future__ import annotations

from collections.abc import Callable
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
    after_step: Callable[[int, trickscope.Run], None] | None = None,
    **kw: Any,
) -> str:
    """Train ``steps`` steps attached with ``init`` + ``watch(model, optimizer)``, calling
    ``after_step(step, run)`` after each step's log; the run id."""
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
            if after_step is not None:
                after_step(step, run)
    return run.id
