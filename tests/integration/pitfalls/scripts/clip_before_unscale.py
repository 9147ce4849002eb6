"""Mixed precision with a ``GradScaler`` whose loop clips before ``scaler.unscale_``: the norm
``clip_grad_norm_`` compares with max_norm=1.0 is the loss-scaled one (×65536), so every step is
clipped to ~1/65536 of the intended size and the model barely moves. Runs on CPU: bfloat16
autocast with ``torch.amp.GradScaler("cpu")``, which scales as it does on CUDA."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import trickscope
from tests.integration.pitfalls.scripts._data import batches, blobs

STEPS = 120
MAX_NORM = 1.0


def train(url: str, **kw: Any) -> str:
    torch.manual_seed(0)
    x, y = blobs()
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                          nn.Linear(64, 4))  # fmt: skip
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu")

    norms = []
    with trickscope.init(project="pitfalls", name="clip-before-unscale", url=url, **kw) as run:
        run.watch(model, optimizer)
        data = batches(x, y, 64)
        for step in range(STEPS):
            xb, yb = next(data)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = F.cross_entropy(model(xb).float(), yb)
            optimizer.zero_grad()
            scaler.scale(loss).backward()
            # The bug: the gradients are still multiplied by the loss scale here.
            norms.append(torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM))
            scaler.step(optimizer)
            scaler.update()
            run.log({"loss": loss.detach()}, step=step)

    # The pitfall, in plain torch: the norm the clip saw was the scaled one, far above max_norm.
    assert scaler.is_enabled() and scaler.get_scale() > 1000
    assert float(torch.stack(norms).min()) > 1000 * MAX_NORM
    return run.id
