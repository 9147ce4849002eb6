"""AdamW over ``model.parameters()``: the LayerNorm gains and biases are decayed towards zero too.

The usual recipe (timm's ``param_groups_weight_decay``, nanoGPT) keeps 1-D parameters out of
weight decay; passing every parameter in one group is the pitfall.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tests.integration.pitfalls.scripts._data import blobs
from tests.integration.pitfalls.scripts._loop import train_plain

STEPS = 150


class Block(nn.Module):
    """Pre-norm residual MLP block."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + F.gelu(self.fc(self.norm(x)))


class Net(nn.Module):
    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.embed = nn.Linear(20, width)
        self.blocks = nn.Sequential(Block(width), Block(width))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.blocks(self.embed(x))))


def train(url: str, **kw: Any) -> str:
    torch.manual_seed(0)
    x, y = blobs()
    model = Net()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)

    # The pitfall, in plain torch: the norm gains sit in a group with weight decay.
    decayed = {
        name
        for name, p in model.named_parameters()
        for group in optimizer.param_groups
        if group["weight_decay"] > 0 and any(p is q for q in group["params"])
    }
    assert {"blocks.0.norm.weight", "blocks.0.norm.bias", "norm.weight"} <= decayed

    return train_plain("decay-on-norm-bias", model, optimizer, x, y, STEPS, url, **kw)
