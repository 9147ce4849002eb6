"""Finding the LR scheduler, EMA model and AMP scaler a training script already has.

``watch(model, optimizer)`` is all a user types; the objects that drive the run sit in the
calling frames: the script's locals (or its module globals), a trainer's ``self``. Walking a
bounded number of frames and looking at those values, and one level into plain objects, finds
them without the user passing them. Only Python attributes are read, never a device value.
"""

from __future__ import annotations

import re
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from trickscope._modules import unwrap

MAX_FRAMES = 30
_MAX_ATTRS = 64  # attributes looked at per object (a trainer's ``self``)
_SKIP = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, Tensor, str)
_SHADOW_ATTRS = ("module", "ema", "shadow")
_CAMEL = (re.compile(r"([A-Z])([A-Z][a-z])"), re.compile(r"([a-z0-9])([A-Z])"))


@dataclass
class Found:
    """What a scan found; ``None`` where nothing matched."""

    scheduler: Any = None
    ema: Any = None
    scaler: Any = None


def is_scheduler_of(obj: Any, optimizer: torch.optim.Optimizer) -> bool:
    """A torch ``LRScheduler`` (or timm/trickscope scheduler) driving ``optimizer``."""
    if isinstance(obj, (type, nn.Module)) or getattr(obj, "optimizer", None) is not optimizer:
        return False
    if isinstance(obj, torch.optim.lr_scheduler.LRScheduler):
        return True
    if isinstance(obj, torch.optim.lr_scheduler.ReduceLROnPlateau):
        return True
    # timm's Scheduler and trickscope's WarmupDecay are no LRScheduler subclasses.
    return callable(getattr(obj, "step", None)) and (
        type(obj).__module__.startswith("timm") or hasattr(obj, "total_steps")
    )


def is_ema_class(obj: Any) -> bool:
    """An ``AveragedModel``, timm ``ModelEma*``, ``tricks.ModelEma``, or a hand-written EMA
    class (its name says EMA, e.g. YOLO's ``ModelEMA``) holding the averaged module."""
    if isinstance(obj, torch.optim.swa_utils.AveragedModel):
        return True
    return names_ema(type(obj).__name__) and shadow_of(obj) is not None


def names_ema(name: str) -> bool:
    """Whether a name has EMA as a word: ``ema``, ``model_ema``, ``emaModel``, ``ModelEMA``,
    ``ModelEmaV3`` (not ``schema`` or ``theme``)."""
    for boundary in _CAMEL:  # EMAModel -> EMA_Model, emaModel -> ema_Model
        name = boundary.sub(r"\1_\2", name)
    words = re.split(r"[^a-z0-9]+", name.lower())
    return "ema" in words


def shadow_of(obj: Any) -> nn.Module | None:
    """The module an EMA object averages into: its ``module`` (torch, timm, trickscope) or
    ``ema``/``shadow`` attribute (hand-written classes)."""
    for attr in _SHADOW_ATTRS:
        inner = getattr(obj, attr, None)
        if isinstance(inner, nn.Module):
            return inner
    return None


def _signature(module: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(n, tuple(p.shape)) for n, p in unwrap(module).named_parameters()]


def averaged_module(obj: Any, name: str = "") -> nn.Module | None:
    """The module ``obj`` averages into when it looks like an EMA: an EMA object's shadow, or a
    plain module kept under a name that says EMA (``ema``, ``model_ema``); else None."""
    if is_ema_class(obj):
        return shadow_of(obj)
    return obj if isinstance(obj, nn.Module) and names_ema(name) else None


def is_ema_of(
    obj: Any, model: nn.Module, signature: list[tuple[str, tuple[int, ...]]], name: str = ""
) -> bool:
    """An EMA whose averaged module's parameter names and shapes are the model's: an EMA object,
    or a plain copy of the model kept in a variable named like one (``ema``, ``model_ema``)."""
    inner = averaged_module(obj, name)
    if inner is None or unwrap(inner) is unwrap(model):
        return False
    return _signature(inner) == signature


def is_scaler(obj: Any) -> bool:
    """A ``torch.amp.GradScaler`` (``torch.cuda.amp.GradScaler`` is a subclass)."""
    return isinstance(obj, torch.amp.GradScaler)


def _candidates(frame: types.FrameType | None, max_frames: int) -> Iterator[tuple[str, Any]]:
    """(name, value) of the frames' locals, a script's globals, and their objects' attributes."""
    seen_globals: set[int] = set()
    depth = 0
    while frame is not None and depth < max_frames:
        values = list(frame.f_locals.items())
        scope = frame.f_globals
        # A script's objects are often module globals; library modules' globals are not looked
        # at (they hold nothing of the user's and are large).
        if scope.get("__name__") == "__main__" and id(scope) not in seen_globals:
            seen_globals.add(id(scope))
            values.extend(scope.items())
        for name, value in values:
            yield str(name), value
            if isinstance(value, _SKIP) or isinstance(value, (nn.Module, torch.optim.Optimizer)):
                continue
            attrs = getattr(value, "__dict__", None)
            if isinstance(attrs, dict):  # a trainer object holding the scheduler or the EMA
                for count, (attr_name, attr) in enumerate(list(attrs.items())):
                    if count >= _MAX_ATTRS:
                        break
                    yield str(attr_name), attr
        frame = frame.f_back
        depth += 1


def scan(
    frame: types.FrameType | None,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    want_scheduler: bool = True,
    want_ema: bool = True,
    want_scaler: bool = True,
    max_frames: int = MAX_FRAMES,
) -> Found:
    """Look through ``frame`` and up to ``max_frames`` callers for the objects wanted."""
    found = Found()
    signature: list[tuple[str, tuple[int, ...]]] | None = None
    for name, value in _candidates(frame, max_frames):
        if want_scheduler and found.scheduler is None and is_scheduler_of(value, optimizer):
            found.scheduler = value
        elif want_scaler and found.scaler is None and is_scaler(value):
            found.scaler = value
        elif want_ema and found.ema is None and averaged_module(value, name) is not None:
            if signature is None:
                signature = _signature(model)
            if is_ema_of(value, model, signature, name):
                found.ema = value
        if (
            (found.scheduler is not None or not want_scheduler)
            and (found.ema is not None or not want_ema)
            and (found.scaler is not None or not want_scaler)
        ):
            break
    return found


def caller(depth: int = 1) -> types.FrameType | None:
    """The frame ``depth`` levels above the caller of this function."""
    try:
        return sys._getframe(depth + 1)
    except ValueError:
        return None
