"""Per-block DropPath rates written falling with depth (``linspace(rate, 0, depth)``): the first
blocks, whose features everything after builds on, are dropped most. Stochastic depth (Huang et
al. 2016) and timm drop the deepest blocks most."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import nn

from tests.integration.pitfalls.scripts._data import blobs
from tests.integration.pitfalls.scripts._loop import train_plain

STEPS = 120


class Block(nn.Module):
    def __init__(self, width: int, drop_path: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc = nn.Linear(width, width)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(F.gelu(self.fc(self.norm(x))))


class Net(nn.Module):
    def __init__(self, width: int = 64, depth: int = 4, drop_path: float = 0.3) -> None:
        super().__init__()
        self.rates = [r.item() for r in torch.linspace(drop_path, 0.05, depth)]  # the pitfall
        self.embed = nn.Linear(20, width)
        self.blocks = nn.Sequential(*(Block(width, rate) for rate in self.rates))
        self.head = nn.Linear(width, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.embed(x)))


def train(url: str, **kw: Any) -> str:
    torch.manual_seed(0)
    x, y = blobs()
    model = Net()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    # The pitfall, in plain torch: the configured rates fall block after block.
    assert all(a > b for a, b in zip(model.rates[:-1], model.rates[1:], strict=True)), model.rates

    return train_plain("drop-path-order", model, optimizer, x, y, STEPS, url, **kw)
