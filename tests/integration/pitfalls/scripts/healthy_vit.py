"""A small ViT trained the way timm's recipe does it: AdamW with no decay on norms, biases,
position embedding and class token, per-step warmup then cosine, EMA of the weights, DropPath
rising with depth. Nothing here is a pitfall."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from timm.models import VisionTransformer
from timm.optim import param_groups_weight_decay
from timm.scheduler import CosineLRScheduler
from timm.utils import ModelEmaV3

import trickscope
from tests.integration.pitfalls.scripts._data import batches, images

STEPS = 300
WARMUP = 40  # ≥ 2/(1−β2) would be 2,000; a tenth of the run is the usual compromise


def train(url: str, **kw: Any) -> str:
    torch.manual_seed(0)
    x, y = images()
    model = VisionTransformer(
        img_size=16, patch_size=4, num_classes=4, embed_dim=32, depth=4, num_heads=2,
        mlp_ratio=2.0, drop_path_rate=0.1,
    )  # fmt: skip
    groups = param_groups_weight_decay(model, 0.05, no_weight_decay_list=model.no_weight_decay())
    optimizer = torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.999))
    scheduler = CosineLRScheduler(
        optimizer, t_initial=STEPS, warmup_t=WARMUP, warmup_lr_init=1e-6, lr_min=1e-5,
        t_in_epochs=False,
    )  # fmt: skip
    ema = ModelEmaV3(model, decay=0.99)  # horizon ~100 steps of a 300-step run

    with trickscope.init(project="healthy", name="vit", url=url, **kw) as run:
        run.watch(model, optimizer)
        data = batches(x, y, 32)
        for step in range(STEPS):
            xb, yb = next(data)
            loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step_update(num_updates=step + 1)
            ema.update(model, step=step)
            run.log({"loss": loss.detach()}, step=step)
        model.eval()
        with torch.no_grad():
            acc = (model(x).argmax(1) == y).float().mean()
            acc_ema = (ema.module(x).argmax(1) == y).float().mean()
        run.log({"eval/acc": acc, "eval/acc_ema": acc_ema}, step=STEPS - 1)

    # It learned: a working recipe, not a broken run that happens to raise nothing.
    assert float(acc) > 0.9 and float(acc_ema) > 0.9, (float(acc), float(acc_ema))
    return run.id
