"""The per-step check vector's way to the host: a pinned ring polled on the training thread.

Unlike :class:`trickscope.transfer.Handoff`, whose parcels the sender thread waits on, the agent
reads these itself, on the training thread: a slot is read only once its CUDA event reports the
copy complete (``Event.query``, which never waits). On the CPU a vector is already in host memory
and is read at once.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import torch
from torch import Tensor

from trickscope import _host


class Ring:
    """``slots`` pinned float32 buffers; ``ship`` returns ``False`` when all are in flight."""

    def __init__(self, slots: int = 8) -> None:
        self._buffers: list[Tensor | None] = [None] * slots
        self._free: deque[int] = deque(range(slots))
        self._flight: deque[tuple[Any, Tensor, int, Any]] = deque()  # event, host, slot, meta
        self._ready: deque[tuple[Any, list[float]]] = deque()

    def ship(self, values: Tensor, meta: Any) -> bool:
        """Start moving a 1-d float32 vector to the host, tagged with ``meta``."""
        if values.device.type != "cuda":
            self._ready.append((meta, _host.read(values)))
            return True
        if not self._free:
            return False
        slot = self._free.popleft()
        size = values.numel()
        buffer = self._buffers[slot]
        if buffer is None or buffer.numel() < size:
            capacity = 1 << max(size - 1, 1).bit_length()
            buffer = self._buffers[slot] = torch.empty(
                capacity, dtype=torch.float32, pin_memory=True
            )
        host = buffer[:size]
        host.copy_(values, non_blocking=True)
        event = torch.cuda.Event()  # type: ignore[no-untyped-call]
        event.record(torch.cuda.current_stream(values.device))
        self._flight.append((event, host, slot, meta))
        return True

    def poll(self) -> list[tuple[Any, list[float]]]:
        """Every vector whose copy is complete, oldest first, with its ``meta``."""
        while self._flight and self._flight[0][0].query():
            _, host, slot, meta = self._flight.popleft()
            self._ready.append((meta, _host.read(host)))
            self._free.append(slot)
        out = list(self._ready)
        self._ready.clear()
        return out
