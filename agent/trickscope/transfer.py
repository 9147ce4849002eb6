"""Device→host handoff without a host sync on the training thread.

On CUDA a result vector is copied with ``non_blocking=True`` into a pinned buffer taken from a
small ring, and a CUDA event is recorded after the copy; the sender thread waits on the event and
then reads the buffer. On CPU the result is already on the host, so it is handed over as is (the
hot path always produces a fresh tensor, never a view of live state).
"""

from __future__ import annotations

from collections import deque
from typing import Any

import torch
from torch import Tensor


class Parcel:
    """One vector in flight from the device to the sender thread."""

    __slots__ = ("_tensor", "_event", "_slot", "_ring")

    def __init__(
        self, tensor: Tensor, event: Any = None, slot: int = -1, ring: Handoff | None = None
    ) -> None:
        self._tensor = tensor
        self._event = event
        self._slot = slot
        self._ring = ring

    def values(self) -> list[float]:
        """Wait for the copy, read the values and return the buffer to the ring.

        Only the sender thread calls this: it may block on the device.
        """
        try:
            if self._event is not None:
                self._event.synchronize()
            return self._tensor.tolist()
        finally:
            self.release()

    def tensor(self) -> Tensor:
        """Wait for the copy and return the values as a host tensor of their own (a pinned
        buffer goes back to the ring, so its values are copied out first).

        Only the sender thread calls this: it may block on the device.
        """
        try:
            if self._event is not None:
                self._event.synchronize()
                return self._tensor.clone()
            return self._tensor  # a CPU result: a fresh tensor of the hot path's own
        finally:
            self.release()

    def release(self) -> None:
        """Give the pinned buffer back without reading it (idempotent)."""
        if self._ring is not None:
            self._ring._free.append(self._slot)
            self._ring = None


class Handoff:
    """A ring of ``slots`` pinned host buffers shared by every device of the process.

    ``ship`` returns ``None`` when every buffer is still in flight: the caller thins optional
    statistics rather than wait. Logged values use :meth:`ship_or_hold`, which never fails.
    """

    def __init__(self, slots: int = 8) -> None:
        if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
            raise ValueError(f"slots={slots!r} must be a positive int")
        # Per slot, one buffer per dtype: histograms (float64) and statistics (float32) alternate,
        # and reallocating pinned memory is slow (freeing it synchronises the device).
        self._buffers: list[dict[torch.dtype, Tensor]] = [{} for _ in range(slots)]
        # deque append/popleft are atomic under the GIL: no lock between the two threads.
        self._free: deque[int] = deque(range(slots))

    def ship(self, values: Tensor) -> Parcel | None:
        """Start moving a 1-d vector (float32, or float64 for histograms) to the host; ``None`` if
        no buffer is free."""
        if values.device.type != "cuda":
            return Parcel(values)
        try:
            slot = self._free.popleft()
        except IndexError:
            return None
        size = values.numel()
        buffer = self._buffers[slot].get(values.dtype)
        if buffer is None or buffer.numel() < size:
            # Grows rarely (a new layout); round up so that small changes do not reallocate.
            capacity = 1 << max(size - 1, 1).bit_length()
            buffer = torch.empty(capacity, dtype=values.dtype, pin_memory=True)
            self._buffers[slot][values.dtype] = buffer
        host = buffer[:size]
        host.copy_(values, non_blocking=True)
        event = torch.cuda.Event()  # type: ignore[no-untyped-call]
        event.record(torch.cuda.current_stream(values.device))
        return Parcel(host, event, slot, self)

    def ship_or_hold(self, values: Tensor) -> Parcel:
        """:meth:`ship`, or, with every buffer in flight, a parcel that holds the device vector
        itself: the sender thread then copies it out (waiting on the device there, never on the
        training thread). For logged values, which are never dropped; ``values`` must be a
        fresh tensor, not a view of state the loop changes."""
        return self.ship(values) or Parcel(values)
