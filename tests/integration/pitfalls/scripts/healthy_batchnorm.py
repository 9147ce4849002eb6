"""An MLP of residual blocks with BatchNorm and timm's DropPath, batches of 32, evaluated every
20 steps and after training: BatchNorm sees 32 samples per forward and DropPath is the identity
in eval. Nothing here is a pitfall."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import nn

import trickscope
from tests.integration.pitfalls.scripts._data import batches, blobs

STEPS = 80
EVAL_EVERY = 20


class Block(nn.Module):
    def __init__(self, width: int, drop_path: float) -> None:
        super().__init__()
        self.branch = nn.Sequential(nn.Linear(width, width, bias=False), nn.BatchNorm1d(width),
                                    nn.ReLU(), nn.Linear(width, width))  # fmt: skip
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.branch(x))


def net(width: int = 32) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(20, width, bias=False), nn.BatchNorm1d(width), nn.ReLU(),
        Block(width, 0.05), Block(width, 0.1), nn.Linear(width, 4),
    )  # fmt: skip


def train(url: str, **kw: Any) -> str:
    torch.manual_seed(0)
    x, y = blobs(spread=0.6)  # overlapping clusters: the loss never collapses to ~0
    model = net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=STEPS)
    with trickscope.init(project="healthy", name="batchnorm-mlp", url=url, **kw) as run:
        run.watch(model, optimizer)
        data = batches(x, y, 32)
        for step in range(STEPS):
            model.train()
            xb, yb = next(data)
            loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            run.log({"loss": loss.detach()}, step=step)
            if (step + 1) % EVAL_EVERY == 0:
                model.eval()
                with torch.no_grad():
                    acc = (model(x).argmax(1) == y).float().mean()
                run.log({"eval/acc": acc}, step=step)

    assert float(acc) > 0.9, float(acc)  # it learned: a working recipe
    return run.id
