"""What ``run.log`` does with a dict of metrics, on the training thread (a lone float it puts
into the sender's packed columns itself).

A dict of ``ROW_MIN_KEYS`` or more keys, logged again with the same keys in the same order, is
one row of its :class:`~trickscope.scalars.Layout`: the key tuple is compared with the last one
seen, the values' types are checked as a set, and then either every value is a number (one
float64 array) or every value is a one-element tensor (one ``torch.stack``, handed to the sender
like the per-layer statistics, never read here). Anything else goes key by key, which is also
where a value ``log`` cannot take raises.
"""

from __future__ import annotations

import numbers
from array import array
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from trickscope.scalars import Layout, ScalarBuffer

# A dict this wide is logged as one row; a narrower one key by key (a row's checks cost more
# than they save there).
ROW_MIN_KEYS = 8
MAX_LAYOUTS = 256
_NUMBER_TYPES = (float, int)  # and their subclasses: numpy.float64, bool, IntEnum
_TENSOR_TYPES = frozenset({Tensor})

# (step, names, values on their device, wall time, layout or None): hands tensors to the sender.
EmitTensors = Callable[[int, Sequence[str], Tensor, float, "Layout | None"], None]


class MetricLog:
    """Puts ``run.log``'s metrics into the sender's buffer (numbers) or hands them over as one
    device vector (tensors).

    Args:
        prefix: Put before every name (``rank/<r>/`` on ranks other than 0).
        emit_tensors: Hands a stacked float32 vector of tensors to the sender thread.
    """

    def __init__(self, prefix: str, emit_tensors: EmitTensors) -> None:
        self._prefix = prefix
        self._emit = emit_tensors
        # Wide dicts seen, by (width, first key, last key): their keys and Layout.
        self._layouts: dict[tuple[int, Any, Any], tuple[tuple[Any, ...], Layout]] = {}

    def add(
        self,
        scalars: ScalarBuffer,
        metrics: Mapping[str, float | Tensor],
        step: int,
        wall: float,
    ) -> None:
        """Log ``metrics`` at ``step``. Raises ``TypeError``, ``ValueError`` or
        ``OverflowError`` for a value it cannot take, before keeping any of them."""
        if len(metrics) >= ROW_MIN_KEYS and self._add_row(scalars, metrics, step, wall):
            return
        prefix = self._prefix
        keys: list[str] = []
        tensors: list[Tensor] = []
        host: list[tuple[str, float]] = []
        for key, value in metrics.items():
            if not isinstance(key, str):
                raise TypeError(f"metric name {key!r} must be a string")
            key = prefix + key
            if type(value) is float:
                host.append((key, value))
            elif isinstance(value, Tensor):
                if value.numel() != 1:
                    raise ValueError(
                        f"metric {key!r} is a tensor of shape {tuple(value.shape)}; log one value"
                    )
                keys.append(key)
                tensors.append(value.detach().reshape(()))
            elif isinstance(value, numbers.Real):
                host.append((key, float(value)))
            else:
                raise TypeError(f"metric {key!r} has type {type(value).__name__}; log numbers")
        if host:
            scalars.add(step, wall, host)
        if tensors:
            device = tensors[0].device
            stacked = torch.stack([t.to(device, torch.float32, non_blocking=True) for t in tensors])
            self._emit(step, keys, stacked, wall, None)

    def _add_row(
        self,
        scalars: ScalarBuffer,
        metrics: Mapping[str, float | Tensor],
        step: int,
        wall: float,
    ) -> bool:
        """Log a wide dict as one row of its layout, with no Python work per key. False when
        its keys are not all strings or its values neither all numbers nor all stackable
        tensors: the caller then goes key by key (and raises where a value is wrong)."""
        keys = tuple(metrics)
        slot = (len(keys), keys[0], keys[-1])
        known = self._layouts.get(slot)
        if known is not None and known[0] == keys:
            layout = known[1]
        else:
            if not all(type(key) is str for key in keys):
                return False
            if len(self._layouts) >= MAX_LAYOUTS:  # bounded: a run of ever-new key sets
                self._layouts.clear()
            prefix = self._prefix
            layout = Layout(tuple(prefix + key for key in keys) if prefix else keys)
            self._layouts[slot] = (keys, layout)
        values = list(metrics.values())
        kinds = set(map(type, values))
        if all(issubclass(kind, _NUMBER_TYPES) for kind in kinds):
            scalars.add_row(layout, step, wall, array("d", values))
            return True
        if kinds != _TENSOR_TYPES:
            return False
        with torch.no_grad():
            try:
                stacked = torch.stack(values)
            except (RuntimeError, TypeError):  # devices or shapes differ
                return False
        if stacked.numel() != len(values):
            return False
        self._emit(step, layout.names, stacked.reshape(-1).float(), wall, layout)
        return True
