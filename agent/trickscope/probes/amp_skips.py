"""Steps a ``GradScaler`` skipped, counted on the device from its scale, without a host read.

A skipped step never calls ``optimizer.step()``, so the optimizer hooks do not see it. Its trace
is in the scaler's state: ``update()`` after a skip multiplies the scale by ``backoff_factor``
and resets the growth tracker; after a step taken it multiplies by ``growth_factor`` where the
tracker reaches ``growth_interval``. So between two optimizer steps, the scale the next one
finds is the scale expected after the last one's update times ``backoff_factor ** k``, ``k``
the steps skipped in between. Each optimizer step (post hook) takes ``k`` from that, adds it to
a device counter and keeps the scale expected after its own update: a few one-element device
ops per step, only where a scaler is watched. A scale set by hand (``update(new_scale)``) can
make one count wrong; a count below zero is taken as zero.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor


class SkippedSteps:
    """The running count of skipped steps of one ``GradScaler``.

    Args:
        scaler: The scaler; ``None``, or one that is disabled, counts nothing.
    """

    def __init__(self, scaler: Any) -> None:
        self._scaler = scaler
        # Skips before the first counted step are known only where the scaler has not scaled
        # anything yet: its scale starts at init_scale. A scaler already in use (a resumed run)
        # starts counting at the first step after this.
        self._fresh = getattr(scaler, "_scale", None) is None
        self._expected: Tensor | None = None  # the scale expected at the next step
        self.count: Tensor | None = None  # float32, one element, on the scale's device

    def after_step(self) -> None:
        """Count the skips since the last optimizer step (from the optimizer's post hook)."""
        scaler = self._scaler
        scale = getattr(scaler, "_scale", None)
        tracker = getattr(scaler, "_growth_tracker", None)
        if not isinstance(scale, Tensor) or not isinstance(tracker, Tensor):
            return
        with torch.no_grad():
            now = scale.detach().reshape(()).to(torch.float32)
            if self.count is None:
                self.count = torch.zeros((), dtype=torch.float32, device=now.device)
                if self._fresh:
                    self._expected = torch.full_like(now, float(scaler._init_scale))
            if self._expected is not None:
                backoff = float(scaler._backoff_factor)
                skipped = torch.log(self._expected / now) / math.log(1.0 / backoff)
                self.count.add_(skipped.round().clamp_min(0.0))
            # This step's own update (a step taken): growth where the tracker reaches the
            # interval, else the same scale.
            grows = tracker.detach().reshape(()) + 1 == int(scaler._growth_interval)
            self._expected = torch.where(grows, now * float(scaler._growth_factor), now)
