"""``AdamW(weight_decay=50)`` at lr 1e-3: 5 % of every weight decayed away each step.

Without gradients the weights fall to 1/e of their size in 20 steps: a decay meant as 0.05
typed as 50, or a recipe's value carried to an LR a thousand times larger. The weights settle
at a fraction of their size and the loss stays high.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tests.integration.pitfalls.scripts._data import blobs
from tests.integration.pitfalls.scripts._loop import train_plain

STEPS = 150


def train(url: str, **kw: Any) -> str:
    torch.manual_seed(0)
    x, y = blobs()
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                          nn.Linear(64, 4))  # fmt: skip
    weights = [p for p in model.parameters() if p.ndim > 1]
    others = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW(
        [{"params": weights, "weight_decay": 50.0}, {"params": others, "weight_decay": 0.0}],
        lr=1e-3,
    )
    run_id = train_plain("weight-decay-too-strong", model, optimizer, x, y, STEPS, url, **kw)

    # The pitfall, in plain torch: the decayed weights ended far smaller than they started.
    first = model[0].weight.detach().norm()
    assert first < 0.5 * nn.Linear(20, 64).weight.norm()
    return run_id
