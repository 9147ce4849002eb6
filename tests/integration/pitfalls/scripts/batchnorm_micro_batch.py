"""A BatchNorm CNN trained with gradient accumulation over 16 micro-batches of 2 images: the
loss is divided correctly and the accumulated batch is 32, but every BatchNorm layer normalises
with the mean and variance of 2 samples. ``freeze=True`` is the healthy fine-tuning variant: the
BatchNorm modules in eval mode, normalising with their running statistics."""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import trickscope
from tests.integration.pitfalls.scripts._data import batches, images

STEPS = 40
ACCUMULATION = 16
MICRO_BATCH = 2


def cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4),
    )  # fmt: skip


def _check_statistics(model: nn.Sequential, x: torch.Tensor) -> None:
    """The pitfall, in plain torch: in training mode the 16 micro-batches' outputs are not the
    accumulated batch's output, as they would be with a per-sample norm."""
    model = copy.deepcopy(model)  # before watch: no hooks, and the running statistics kept
    with torch.no_grad():
        whole = model(x)
        micro = torch.cat([model(part) for part in x.split(MICRO_BATCH)])
    assert not torch.allclose(micro, whole, rtol=1e-3, atol=1e-3)


def train(url: str, freeze: bool = False, **kw: Any) -> str:
    torch.manual_seed(0)
    x, y = images()
    model = cnn()
    _check_statistics(model, x[: ACCUMULATION * MICRO_BATCH])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    name = "batchnorm-frozen" if freeze else "batchnorm-micro-batch"
    with trickscope.init(project="pitfalls", name=name, url=url, **kw) as run:
        run.watch(model, optimizer)
        data = batches(x, y, MICRO_BATCH)
        for step in range(STEPS):
            model.train()
            if freeze:
                for module in model.modules():
                    if isinstance(module, nn.BatchNorm2d):
                        module.eval()
            optimizer.zero_grad()
            for _ in range(ACCUMULATION):
                xb, yb = next(data)
                loss = F.cross_entropy(model(xb), yb) / ACCUMULATION
                loss.backward()
            optimizer.step()
            run.log({"loss": loss.detach() * ACCUMULATION}, step=step)
    return run.id
