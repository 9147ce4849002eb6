"""A hand-written DropPath that forgets ``self.training``: evaluation runs a randomly thinned
network, a different one on every call. Evaluated every 20 steps and after training."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import trickscope
from tests.integration.pitfalls.scripts._data import batches, blobs

STEPS = 60
EVAL_EVERY = 20


class DropPath(nn.Module):
    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The pitfall: no `if not self.training: return x`.
        keep = (torch.rand(x.shape[0], 1, device=x.device) >= self.p).to(x.dtype)
        return x * keep / (1 - self.p)


class Block(nn.Module):
    def __init__(self, width: int, drop_path: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc = nn.Linear(width, width)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(F.gelu(self.fc(self.norm(x))))


class Net(nn.Module):
    def __init__(self, width: int = 32, depth: int = 3) -> None:
        super().__init__()
        self.embed = nn.Linear(20, width)
        rates = [r.item() for r in torch.linspace(0.1, 0.3, depth)]
        self.blocks = nn.Sequential(*(Block(width, rate) for rate in rates))
        self.head = nn.Linear(width, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.embed(x)))


def train(url: str, **kw: Any) -> str:
    torch.manual_seed(0)
    x, y = blobs()
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    # The pitfall, in plain torch: two evaluations of the same inputs disagree.
    model.eval()
    with torch.no_grad():
        assert not torch.equal(model(x[:64]), model(x[:64]))

    with trickscope.init(project="pitfalls", name="drop-path-in-eval", url=url, **kw) as run:
        run.watch(model, optimizer)
        data = batches(x, y, 64)
        for step in range(STEPS):
            model.train()
            xb, yb = next(data)
            loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            run.log({"loss": loss.detach()}, step=step)
            if (step + 1) % EVAL_EVERY == 0:
                model.eval()
                with torch.no_grad():
                    acc = (model(x).argmax(1) == y).float().mean()
                run.log({"eval/acc": acc}, step=step)
    return run.id
