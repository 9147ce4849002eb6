"""``Adam(weight_decay=1e-2)``: an L2 term added to the gradient, then divided by √v̂.

Parameters with large gradients are hardly decayed at all; AdamW (decoupled decay) was meant.
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
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-2)

    # The pitfall, in plain torch: coupled decay (torch's Adam adds wd·w to the gradient).
    group = optimizer.param_groups[0]
    assert group["weight_decay"] > 0 and not group.get("decoupled_weight_decay", False)

    return train_plain("adam-coupled-l2", model, optimizer, x, y, STEPS, url, **kw)
