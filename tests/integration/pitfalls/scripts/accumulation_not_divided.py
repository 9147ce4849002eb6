"""Gradient accumulation over 4 micro-batches without dividing the loss by 4: the gradient is 4×
the mean-batch gradient, so SGD's effective LR is 4× what the recipe says."""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import trickscope
from tests.integration.pitfalls.scripts._data import batches, blobs

STEPS = 80
ACCUMULATION = 4
MICRO_BATCH = 16


def _grad_norm(model: nn.Module) -> float:
    return float(torch.cat([p.grad.flatten() for p in model.parameters()]).norm())


def _check_scale(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    """The pitfall, in plain torch: the accumulated gradient is 4× that of the whole batch."""
    model = copy.deepcopy(model)  # before watch: no hooks on the copy, nothing reported
    for micro_x, micro_y in zip(x.split(MICRO_BATCH), y.split(MICRO_BATCH), strict=True):
        F.cross_entropy(model(micro_x), micro_y).backward()
    accumulated = _grad_norm(model)
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    ratio = accumulated / _grad_norm(model)
    assert abs(ratio - ACCUMULATION) < 1e-3 * ACCUMULATION, ratio


def train(url: str, **kw: Any) -> str:
    torch.manual_seed(0)
    x, y = blobs()
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                          nn.Linear(64, 4))  # fmt: skip
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    _check_scale(model, x[: ACCUMULATION * MICRO_BATCH], y[: ACCUMULATION * MICRO_BATCH])

    with trickscope.init(project="pitfalls", name="accumulation-not-divided", url=url, **kw) as run:
        run.watch(model, optimizer)
        data = batches(x, y, MICRO_BATCH)
        for step in range(STEPS):
            optimizer.zero_grad()
            for _ in range(ACCUMULATION):
                xb, yb = next(data)
                loss = F.cross_entropy(model(xb), yb)
                loss.backward()  # the pitfall: not loss / ACCUMULATION
            optimizer.step()
            run.log({"loss": loss.detach()}, step=step)
    return run.id
