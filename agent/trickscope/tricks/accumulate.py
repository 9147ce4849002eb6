"""Gradient accumulation: N micro-batches, loss divided by N, one optimizer step.

Goyal et al. 2017 (https://arxiv.org/abs/1706.02677) relate the effective batch to the LR; under
DDP, gradients are all-reduced only on the last micro-step (``no_sync`` on the others).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from trickscope._checks import check_int
from trickscope.tricks._sink import Metric, MetricSink, report


class GradientAccumulator:
    """Scales each micro-batch loss by 1/N and steps the optimizer on every N-th micro-step.

    Wrap each micro-step's forward and backward in :meth:`micro_step` so that a DDP (or FSDP)
    model skips the gradient all-reduce on all but the last micro-step (DDP needs the forward
    inside ``no_sync`` too). :meth:`step` then steps the optimizer, zeroes the gradients and
    reports ``accum/micro_steps`` (micro-steps actually accumulated) and
    ``accum/effective_batch`` (micro batch × N × world size; the world size defaults to the
    ``torch.distributed`` process group's, 1 outside one). All counters are Python ints.

    Example:
        >>> acc = GradientAccumulator(model, optimizer, steps=4, micro_batch_size=32, run=run)
        >>> step = 0
        >>> for x, y in loader:
        ...     with acc.micro_step():
        ...         acc.backward(loss_fn(model(x), y))
        ...     if acc.step(step):
        ...         step += 1
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        steps: int,
        *,
        micro_batch_size: int | None = None,
        world_size: int | None = None,
        run: MetricSink | None = None,
        set_to_none: bool = True,
    ) -> None:
        check_int("steps", steps, 1)
        if micro_batch_size is not None:
            check_int("micro_batch_size", micro_batch_size, 1)
        if world_size is None:
            world_size = _process_group_size()
        check_int("world_size", world_size, 1)
        self.model = model
        self.optimizer = optimizer
        self.steps = steps
        self.micro_batch_size = micro_batch_size
        self.world_size = world_size
        self.run = run
        self.set_to_none = set_to_none
        self.micro = 0

    @property
    def effective_batch_size(self) -> int | None:
        """Samples per optimizer step across all ranks, when the micro batch size is known."""
        if self.micro_batch_size is None:
            return None
        return self.micro_batch_size * self.steps * self.world_size

    @property
    def is_last_micro_step(self) -> bool:
        """Whether the next backward completes the accumulation."""
        return self.micro + 1 >= self.steps

    @property
    def should_step(self) -> bool:
        """Whether N micro-steps have been accumulated since the last optimizer step."""
        return self.micro >= self.steps

    @contextlib.contextmanager
    def micro_step(self, *, final: bool = False) -> Iterator[None]:
        """Context for one micro-step's forward and backward; ``no_sync`` unless it is the last.

        Pass ``final=True`` for a micro-batch after which you will ``step(force=True)`` (the end
        of an epoch mid-accumulation): under DDP its backward must all-reduce, or every rank
        steps on its own gradients and the replicas part ways.
        """
        no_sync = getattr(self.model, "no_sync", None)
        if callable(no_sync) and not (final or self.is_last_micro_step):
            with no_sync():
                yield
        else:
            yield

    def backward(self, loss: torch.Tensor, **kwargs: Any) -> None:
        """``(loss / N).backward(**kwargs)`` and count the micro-step."""
        (loss / self.steps).backward(**kwargs)
        self.micro += 1

    def step(self, step: int | None = None, *, force: bool = False) -> bool:
        """Step the optimizer and zero gradients if due (or ``force``); report; return if stepped.

        ``force`` steps a partial accumulation (e.g. the end of an epoch); its gradients are then
        ``k/N`` of the mean over the ``k`` micro-batches seen. Under DDP, run the last of those
        micro-batches in ``micro_step(final=True)``.
        """
        if not (self.should_step or (force and self.micro > 0)):
            return False
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=self.set_to_none)
        metrics: dict[str, Metric] = {"accum/micro_steps": float(self.micro)}
        if self.micro_batch_size is not None:
            metrics["accum/effective_batch"] = float(
                self.micro_batch_size * self.micro * self.world_size
            )
        self.micro = 0
        report(self.run, metrics, step)
        return True

    def describe(self) -> dict[str, Any]:
        """Static configuration for the run config."""
        return {
            "accumulation_steps": self.steps,
            "micro_batch_size": self.micro_batch_size,
            "world_size": self.world_size,
            "effective_batch_size": self.effective_batch_size,
        }


def _process_group_size() -> int:
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
