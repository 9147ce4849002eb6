"""The demo runs: a small residual CNN on scikit-learn's digits with all nine tricks, streamed live.

Read top to bottom like a training script; everything trickscope adds is the ``run`` object and
the instrumented tricks from :mod:`trickscope.tricks`. Two runs train back to back, AdamW and
SGD with Nesterov momentum, so the compare page has something to compare.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

import trickscope
from trickscope import tricks


@dataclass(frozen=True)
class DemoConfig:
    optimizer: str = "adamw"  # or "sgd" (Nesterov momentum)
    epochs: int = 15
    batch_size: int = 32
    accumulation: int = 2  # two micro-batches of 16 per optimizer step: effective batch 32
    lr: float = 3e-3
    sgd_lr: float = 0.05
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.99)
    eps: float = 1e-8
    weight_decay: float = 0.05
    warmup_steps: int = 40
    min_lr: float = 1e-5
    clip_norm: float = 5.0
    drop_path: float = 0.1
    ema_decay: float = 0.99
    seed: int = 0


class ResidualBlock(nn.Module):
    """``x + drop_path(f(x))``: DropPath on the residual branch, never on the sum."""

    def __init__(self, width: int, drop_rate: float) -> None:
        super().__init__()
        self.branch = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
        )
        self.drop_path = tricks.DropPath(drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.drop_path(self.branch(x)))


class DigitsNet(nn.Module):
    """A stem, residual blocks with DropPath rates rising with depth, and a classifier."""

    def __init__(self, width: int = 32, depth: int = 3, drop_path: float = 0.1) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        rates = tricks.drop_path_rates(depth, drop_path)
        self.blocks = nn.Sequential(*(ResidualBlock(width, rate) for rate in rates))
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(4 * width, 64), nn.ReLU(),
            nn.Linear(64, 10),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


def load_digits_tensors(seed: int) -> tuple[torch.Tensor, ...]:
    """scikit-learn's digits (shipped with the package, no download), split 80/20."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError(
            "trickscope demo needs scikit-learn: pip install 'trickscope[demo]'"
        ) from None
    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(data.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    split = int(0.8 * len(order))
    train, test = order[:split], order[split:]
    return images[train], labels[train], images[test], labels[test]


def eval_sums(
    model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Per-batch sums for :func:`trickscope.tricks.evaluate_raw_and_ema` (stay on the device)."""
    images, labels = batch
    logits = model(images)
    return {
        "correct": (logits.argmax(dim=1) == labels).sum(),
        "loss_sum": F.cross_entropy(logits, labels, reduction="sum"),
        "count": torch.tensor(len(labels)),
    }


def train(run: trickscope.Run, config: DemoConfig) -> dict[str, float]:
    """Train and evaluate with every trick reporting to ``run``; returns final accuracies."""
    torch.manual_seed(config.seed)
    x_train, y_train, x_test, y_test = load_digits_tensors(config.seed)
    model = DigitsNet(drop_path=config.drop_path)
    micro_batch = config.batch_size // config.accumulation
    steps_per_epoch = len(y_train) // config.batch_size
    total_steps = config.epochs * steps_per_epoch

    # 1. Weight decay, decoupled (AdamW) or coupled (SGD), never on biases or norm gains.
    groups = tricks.param_groups_weight_decay(model, config.weight_decay)
    # 5./6. SGD momentum (Nesterov) or AdamW betas and eps, reporting their hyperparameters.
    if config.optimizer == "sgd":
        optimizer = tricks.build_optimizer(
            groups, "sgd", lr=config.sgd_lr, momentum=config.momentum, nesterov=True, run=run
        )
    else:
        optimizer = tricks.build_optimizer(
            groups, "adamw", lr=config.lr, betas=config.betas, eps=config.eps, run=run
        )
    reporter = tricks.OptimizerReporter(optimizer, run, every=10, model=model)
    # 2. Linear warmup, then cosine decay to a floor, stepped per optimizer step.
    scheduler = tricks.WarmupDecay(
        optimizer, total_steps=total_steps, warmup_steps=config.warmup_steps,
        min_lr=config.min_lr, run=run,
    )  # fmt: skip
    # 3. DropPath rates per block, configured vs realised.
    drop_paths = tricks.DropPathMonitor(model, run, every=5)
    # 4. EMA of the weights with a decay warm-up; BatchNorm statistics averaged too.
    ema = tricks.ModelEma(model, config.ema_decay, warmup="ratio", run=run, report_every=5)
    # 7. Gradient accumulation: loss / N, optimizer step on the last micro-batch.
    accumulator = tricks.GradientAccumulator(
        model, optimizer, config.accumulation, micro_batch_size=micro_batch, run=run
    )
    # 9. Per-layer gradient and weight statistics at every step.
    run.watch(model, optimizer, every=1)
    run.update_config({
        "tricks": {
            "param_groups": tricks.describe_param_groups(groups),
            "optimizer": reporter.describe(),
            "schedule": scheduler.describe(),
            "drop_path": drop_paths.describe(),
            "ema": ema.describe(),
            "accumulation": accumulator.describe(),
            "clip": {"max_norm": config.clip_norm, "norm_type": 2.0},
        }
    })  # fmt: skip

    step = 0
    for _ in range(config.epochs):
        order = torch.randperm(len(y_train))[: steps_per_epoch * config.batch_size]
        for batch in order.split(micro_batch):
            with accumulator.micro_step():
                loss = F.cross_entropy(model(x_train[batch]), y_train[batch])
                accumulator.backward(loss)
            if not accumulator.should_step:
                continue
            # 8. Gradient clipping by global norm, reported before and after.
            tricks.clip_grad_norm(model.parameters(), config.clip_norm, run=run, step=step)
            scheduler.step(step)
            accumulator.step(step)
            ema.update(model, step)
            drop_paths.report(step)
            reporter.report(step)
            tricks.report_weight_decay(optimizer, run, step)
            run.log({"loss/train": loss.detach()}, step=step)
            step += 1
        test_batches = list(zip(x_test.split(256), y_test.split(256), strict=True))
        metrics = tricks.evaluate_raw_and_ema(model, ema, test_batches, eval_sums, run, step)
    # The one deliberate host sync, after training: the summary printed to the user.
    return {
        "acc_raw": float(metrics["eval/acc_raw"]),
        "acc_ema": float(metrics["eval/acc_ema"]),
        "steps": step,
    }


def run_demo(url: str, config: DemoConfig, name: str | None = None) -> tuple[str, dict[str, float]]:
    """Train one demo run streaming to ``url``; returns the run's URL and final accuracies."""
    started = time.perf_counter()
    with trickscope.init(
        project="digits",
        name=name,
        url=url,
        config={**asdict(config), "model": "DigitsNet", "data": "sklearn digits"},
        tags=["demo", config.optimizer],
    ) as run:
        result = train(run, config)
    result["seconds"] = time.perf_counter() - started
    return run.url, result
