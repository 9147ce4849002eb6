"""Adam with eps=0.1: per-element gradients here are ~1e-3, so √v̂ ≪ eps on nearly every parameter
and Adam degrades to SGD with momentum at lr/eps (no per-parameter scaling left)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import trickscope
from tests.integration.pitfalls.scripts._data import batches, blobs

STEPS = 200
EPS = 0.1


def eps_dominance(optimizer: torch.optim.Adam, model: nn.Module) -> dict[str, float]:
    """Per parameter, the share of elements where eps > √v̂ (bias-corrected, as Adam divides)."""
    beta2 = optimizer.param_groups[0]["betas"][1]
    shares = {}
    for name, p in model.named_parameters():
        state = optimizer.state[p]
        v_hat = state["exp_avg_sq"] / (1 - beta2 ** float(state["step"]))
        shares[name] = float((v_hat.sqrt() < EPS).float().mean())
    return shares


def train(url: str, **kw: Any) -> str:
    torch.manual_seed(0)
    x, y = blobs()
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                          nn.Linear(64, 4))  # fmt: skip
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, eps=EPS)

    with trickscope.init(project="pitfalls", name="eps-dominates", url=url, **kw) as run:
        run.watch(model, optimizer)
        data = batches(x, y, 64)
        for step in range(STEPS):
            xb, yb = next(data)
            loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            run.log({"loss": loss.detach()}, step=step)

    # The pitfall, in plain torch: eps dominates √v̂ on nearly all of every parameter.
    shares = eps_dominance(optimizer, model)
    assert all(share > 0.9 for share in shares.values()), shares
    return run.id
