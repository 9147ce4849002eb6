"""The demo run: a small CNN on scikit-learn's digits, with the classic tricks, streamed live.

Read top to bottom like a training script: everything trickscope adds is the ``run`` object.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

import trickscope


@dataclass(frozen=True)
class DemoConfig:
    epochs: int = 12
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.05
    warmup_steps: int = 60
    clip_norm: float = 1.0
    ema_decay: float = 0.98
    seed: int = 0


class DigitsNet(nn.Module):
    """Two conv blocks with BatchNorm, then a classifier: small enough for a CPU minute."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(2 * width * 16, 128), nn.ReLU(), nn.Linear(128, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def load_digits_tensors(seed: int) -> tuple[torch.Tensor, ...]:
    """scikit-learn's digits (shipped with the package, no download), split 80/20."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise SystemExit(
            "trickscope demo needs scikit-learn: pip install 'trickscope[demo]'"
        ) from None
    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(data.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    split = int(0.8 * len(order))
    train, test = order[:split], order[split:]
    return images[train], labels[train], images[test], labels[test]


def warmup_cosine(step: int, *, warmup: int, total: int) -> float:
    """LR multiplier: linear warmup to 1, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


@torch.no_grad()
def evaluate(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Accuracy and mean loss as 0-d tensors (logged without a host sync)."""
    model.eval()
    logits = model(images)
    model.train()
    accuracy = (logits.argmax(dim=1) == labels).float().mean()
    return accuracy, F.cross_entropy(logits, labels)


def train(run: trickscope.Run, config: DemoConfig) -> dict[str, float]:
    """Train and evaluate; returns the final raw and EMA accuracies."""
    torch.manual_seed(config.seed)
    x_train, y_train, x_test, y_test = load_digits_tensors(config.seed)
    model = DigitsNet()
    # Decay only matrices and kernels: biases and norm gains are excluded (see TRICKS.md).
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=config.lr,
        betas=(0.9, 0.999),
        eps=1e-8,
    )
    steps_per_epoch = math.ceil(len(y_train) / config.batch_size)
    total_steps = config.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, warmup=config.warmup_steps, total=total_steps)
    )
    # BatchNorm running statistics are averaged along with the weights (use_buffers=True).
    ema = AveragedModel(
        model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay), use_buffers=True
    )
    run.watch(model, optimizer, every=1)

    step = 0
    for epoch in range(config.epochs):
        order = torch.randperm(len(y_train))
        for start in range(0, len(order), config.batch_size):
            batch = order[start : start + config.batch_size]
            loss = F.cross_entropy(model(x_train[batch]), y_train[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm)
            optimizer.step()
            scheduler.step()
            ema.update_parameters(model)
            run.log(
                {
                    "loss/train": loss.detach(),
                    "clip/pre_norm": grad_norm,
                    "clip/threshold": config.clip_norm,
                },
                step=step,
            )
            step += 1
        raw_acc, raw_loss = evaluate(model, x_test, y_test)
        ema_acc, ema_loss = evaluate(ema.module, x_test, y_test)
        run.log(
            {
                "eval/acc_raw": raw_acc,
                "eval/acc_ema": ema_acc,
                "eval/loss_raw": raw_loss,
                "eval/loss_ema": ema_loss,
                "epoch": epoch,
            },
            step=step,
        )
    # The one deliberate host sync, after training: the summary printed to the user.
    return {"acc_raw": raw_acc.item(), "acc_ema": ema_acc.item(), "steps": step}


def run_demo(url: str, config: DemoConfig, name: str | None = None) -> tuple[str, dict[str, float]]:
    """Train the demo model, streaming to ``url``; returns the run's URL and final accuracies."""
    started = time.perf_counter()
    with trickscope.init(
        project="digits",
        name=name,
        url=url,
        config={
            **config.__dict__,
            "model": "DigitsNet",
            "optimizer": "AdamW",
            "schedule": "linear warmup + cosine",
            "ema": "AveragedModel",
        },
        tags=["demo"],
    ) as run:
        result = train(run, config)
        result["seconds"] = time.perf_counter() - started
    return run.url, result
