"""A config that says 4 micro-batches per optimizer step, and a loop that steps on every one:
the accumulation the run was planned with never happens."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tests.integration.pitfalls.scripts._data import blobs
from tests.integration.pitfalls.scripts._loop import train_plain

STEPS = 60
ACCUMULATION = 4


def train(url: str, **kw: Any) -> str:
    torch.manual_seed(0)
    x, y = blobs()
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    # The pitfall: the plain loop steps after every backward, whatever the config says.
    config = {"train": {"grad_accum_steps": ACCUMULATION, "micro_batch": 64}}
    return train_plain(
        "accumulation-not-applied", model, optimizer, x, y, STEPS, url, config=config, **kw
    )
