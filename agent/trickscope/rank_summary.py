"""A small per-rank summary under ``torch.distributed``, sent by every rank.

Per-layer statistics come from rank 0 alone (after the all-reduce the gradients are the same on
every rank), but two things can only be seen by comparing ranks:

* **stragglers**: every rank waits at the all-reduce for the slowest, so the step time is the
  same everywhere and points at no one. What differs is the time a rank spends between its
  optimizer step and its next forward pass, mostly waiting for its input pipeline;
* **replicas that drift apart**: DDP keeps the weights identical only if every update goes
  through it. The total gradient and weight norms of each rank must agree with rank 0's.

Sharded parameters (FSDP2, DTensor) differ across ranks by design: the norms then take only the
parameters every rank holds whole (plain tensors, replicated DTensors), and are left out where
there are none. On such a model the summary also keeps, on ranks other than 0, the hooks of the
watcher that merges the shards' statistics (:func:`trickscope.sharded.rejoin`).

Every ``every`` optimizer steps a rank reports, under ``rank/<r>/``: ``grad_norm`` and
``weight_norm`` (totals, device ops, copied with the other tensors), ``step_time`` and
``data_time`` (seconds, means over the steps since the last report, host clocks) and, on CUDA,
``cuda_max_allocated`` (bytes, the caching allocator's host-side counter: no device sync).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.profiler import record_function

from trickscope import _foreach, dtensors, sharded
from trickscope._checks import check_int
from trickscope._incidents import Incidents

Emit = Callable[[int, Sequence[str], Tensor, list[tuple[str, float]]], None]


def total_norm(tensors: list[Tensor], device: torch.device) -> Tensor:
    """The L2 norm of all ``tensors`` together, as a float32 0-d tensor on ``device``.

    Not ``torch.nn.utils.get_total_norm``, which the clipping trick uses: it keeps the tensors'
    dtype, and a bfloat16 norm (3 significant digits) would hide replicas drifting apart.
    """
    norms: list[Tensor] = []
    for indices in _foreach.group_by_device_dtype(tensors).values():
        group = [tensors[i] for i in indices]
        for norm in _foreach.norm(group, dtype=torch.float32):
            norms.append(norm.to(device, non_blocking=True))
    total: Tensor = torch.linalg.vector_norm(torch.stack(norms))
    return total


class RankSummary:
    """Hooks on one rank's model and optimizer reporting the per-rank summary."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        rank: int,
        every: int,
        start_step: int,
        emit: Emit,
        incidents: Incidents,
    ) -> None:
        params = list(model.parameters())
        self._params: list[Tensor] = [p for p in params if dtensors.replicated(p)]
        self._device = dtensors.local(params[0]).device
        self._every = check_int("every", every, 1)
        self._prefix = f"rank/{rank}/"
        self._emit = emit
        self._incidents = incidents
        self._next = check_int("start_step", start_step, 0)
        self.step = self._next  # the last optimizer step taken (``Run.log``'s default step)
        self._due = -(-self._next // self._every) * self._every
        self._last_step_end: float | None = None
        self._forward_start: float | None = None
        self._step_time = _Mean()
        self._data_time = _Mean()
        self._handles = [
            model.register_forward_pre_hook(self._forward),
            optimizer.register_step_post_hook(self._post),
        ]
        if rank != 0:
            self._handles.extend(sharded.rejoin(optimizer))

    def close(self) -> None:
        """Remove the hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    # The hooks run on the training thread: host clocks and device ops only, nothing raised.

    def _forward(self, module: nn.Module, args: Any) -> None:
        # The first forward after a step ends the wait; gradient accumulation runs several.
        if self._forward_start is None:
            self._forward_start = time.perf_counter()

    def _post(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        now = time.perf_counter()
        step, self._next = self._next, self._next + 1
        self.step = step
        if self._last_step_end is not None:
            self._step_time.add(now - self._last_step_end)
            if self._forward_start is not None:
                self._data_time.add(max(0.0, self._forward_start - self._last_step_end))
        self._last_step_end = now
        self._forward_start = None
        if step != self._due:
            return
        self._due += self._every
        try:
            with record_function("trickscope.rank_summary"), torch.no_grad():
                grad_scale = kwargs.get("grad_scale") if isinstance(kwargs, dict) else None
                self._report(step, grad_scale)
        except Exception as exc:
            self._incidents.error("per-rank summary", exc)

    def _report(self, step: int, grad_scale: Tensor | None) -> None:
        prefix = self._prefix
        keys: list[str] = []
        values: list[Tensor] = []
        grads = [dtensors.local(p.grad) for p in self._params if p.grad is not None]
        if grads:
            norm = total_norm(grads, self._device)
            if isinstance(grad_scale, Tensor):  # a fused AMP step leaves the gradients scaled
                norm = norm / grad_scale.to(self._device, torch.float32)
            keys.append(prefix + "grad_norm")
            values.append(norm)
        if self._params:
            keys.append(prefix + "weight_norm")
            values.append(total_norm([dtensors.local(p) for p in self._params], self._device))
        host = [
            (prefix + name, mean.take())
            for name, mean in (("step_time", self._step_time), ("data_time", self._data_time))
            if mean.count
        ]
        if self._device.type == "cuda":
            allocated = torch.cuda.max_memory_allocated(self._device)
            host.append((prefix + "cuda_max_allocated", float(allocated)))
        vector = torch.stack(values) if values else torch.zeros(0, device=self._device)
        self._emit(step, keys, vector, host)


class _Mean:
    """A running mean of host floats, emptied when read."""

    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0

    def add(self, value: float) -> None:
        self.total += value
        self.count += 1

    def take(self) -> float:
        mean = self.total / self.count
        self.total, self.count = 0.0, 0
        return mean
