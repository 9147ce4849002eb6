"""A hand-written EMA that averages the parameters only: the copy's BatchNorm running
statistics stay those of the step it was made, so the averaged weights are evaluated with
statistics of other weights."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

import trickscope
from tests.integration.pitfalls.scripts._data import blobs
from tests.integration.pitfalls.scripts._loop import train_plain

STEPS = 150
DECAY = 0.95


def train(url: str, **kw: Any) -> str:
    torch.manual_seed(0)
    x, y = blobs()
    model = nn.Sequential(nn.Linear(20, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model_ema = copy.deepcopy(model)
    initial = model_ema[1].running_var.clone()

    def average(step: int, run: trickscope.Run) -> None:
        with torch.no_grad():  # the pitfall: parameters() only, no buffers()
            for averaged, live in zip(model_ema.parameters(), model.parameters(), strict=True):
                averaged.lerp_(live, 1 - DECAY)

    run_id = train_plain("ema-stale-batchnorm", model, optimizer, x, y, STEPS, url, average, **kw)

    # The pitfall, in plain torch: the copy's statistics never moved, the model's did.
    assert torch.equal(model_ema[1].running_var, initial)
    assert not torch.equal(model[1].running_var, initial)
    return run_id
