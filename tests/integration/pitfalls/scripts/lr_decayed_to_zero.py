"""``ExponentialLR(gamma=0.9)`` meant per epoch but stepped per step: after 150 steps the LR is
1e-7 of its start, so most of the run trains with an LR that changes nothing.

The LR never reaches exactly zero, which is why the rule compares it with the run's peak.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tests.integration.pitfalls.scripts._data import blobs
from tests.integration.pitfalls.scripts._loop import train_plain

STEPS = 300


def train(url: str, **kw: Any) -> str:
    torch.manual_seed(0)
    x, y = blobs()
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.9)
    # The pitfall: stepped per step, with a per-epoch gamma.
    run_id = train_plain(
        "lr-decayed-to-zero", model, optimizer, x, y, STEPS, url, lambda *_: scheduler.step(), **kw
    )

    # The pitfall, in plain torch: the LR is positive but negligible for most of the run.
    lr = optimizer.param_groups[0]["lr"]
    assert 0 < lr < 1e-12
    return run_id
