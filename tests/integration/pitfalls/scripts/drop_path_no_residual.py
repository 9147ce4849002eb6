"""DropPath on the MLP branch without the residual, as in the source text's ViT block:
``return self.drop_path(self.mlp(self.norm2(x)))``. A dropped sample leaves the block as all
zeros, erasing everything before it, instead of skipping one branch."""

from __future__ import annotations

from typing import Any

import torch
from timm.layers import DropPath, Mlp
from timm.models.vision_transformer import Attention
from torch import nn

from tests.integration.pitfalls.scripts._data import tokens
from tests.integration.pitfalls.scripts._loop import train_plain

STEPS = 120
DIM = 16


class Block(nn.Module):
    def __init__(self, dim: int, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads=2)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, 2 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return self.drop_path(self.mlp(self.norm2(x)))  # the pitfall: no `x +`


class Net(nn.Module):
    def __init__(self, depth: int = 2, drop_path: float = 0.2) -> None:
        super().__init__()
        rates = [r.item() for r in torch.linspace(0, drop_path, depth)]  # rising with depth
        self.blocks = nn.Sequential(*(Block(DIM, rate) for rate in rates))
        self.norm = nn.LayerNorm(DIM)
        self.head = nn.Linear(DIM, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.blocks(x).mean(dim=1)))


def train(url: str, **kw: Any) -> str:
    torch.manual_seed(0)
    x, y = tokens(dim=DIM)
    model = Net()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    zeroed = [0, 0]  # samples whose block output is all zeros, samples seen

    def count_zeroed(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        zeroed[0] += int((output.flatten(1) == 0).all(dim=1).sum())
        zeroed[1] += len(output)

    # Plain-torch evidence only; removed before the agent attaches its own hooks.
    handle = model.blocks[1].register_forward_hook(count_zeroed)
    with torch.no_grad():
        for xb in x.split(64):
            model(xb)
    handle.remove()
    # The pitfall, in plain torch: ~20 % of the samples leave block 1 as all zeros.
    assert 0.1 < zeroed[0] / zeroed[1] < 0.3, zeroed

    return train_plain("drop-path-no-residual", model, optimizer, x, y, STEPS, url, **kw)
