"""The setup document: what ``watch`` sees of the training setup (``docs/diagnosis.md`` §1).

Built from Python objects only (param groups, module types, scheduler and EMA attributes), never
from device values: a tensor learning rate on the CPU is read from host memory, one on a device
is reported as ``null``.
"""

from __future__ import annotations

import math
import numbers
import re
from typing import Any

import torch
from torch import Tensor, nn

from trickscope import _host
from trickscope._modules import unwrap

SETUP_VERSION = 1

# Normalisation modules by type; any class whose name contains "norm" counts as well.
_NORM_TYPES: tuple[type, ...] = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)
# Parameter names of position/token embeddings held directly by a model (ViT's ``pos_embed``,
# ``cls_token``; GPT-2's ``wte``/``wpe``).
_EMBEDDING_NAME = re.compile(r"(embed|embedding|_emb|^emb|_token$|^wte$|^wpe$|^cls_token$)")


def number(value: Any) -> float | int | None:
    """A JSON number for a hyperparameter: ints and floats as they are, a CPU tensor's value,
    anything else (a device tensor: reading it would sync) ``None``. Non-finite floats too."""
    if isinstance(value, bool):
        return None
    if isinstance(value, Tensor):
        if value.device.type != "cpu" or value.numel() != 1:
            return None
        value = _host.read(value.detach())[0]
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        return value if math.isfinite(value) else None
    return None


def param_kind(name: str, param: Tensor, module: nn.Module) -> str:
    """``norm``, ``embedding``, ``bias`` or ``weight`` (see ``docs/diagnosis.md``)."""
    if isinstance(module, _NORM_TYPES) or "norm" in type(module).__name__.lower():
        return "norm"
    leaf = name.rsplit(".", 1)[-1].lower()
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)) or _EMBEDDING_NAME.search(leaf):
        return "embedding"
    return "bias" if param.ndim == 1 else "weight"


def optimizer_family(optimizer: torch.optim.Optimizer) -> str:
    """``adam`` (Adam, AdamW, NAdam, RAdam, Adamax, LAMB), ``sgd`` or ``other``."""
    name = type(optimizer).__name__.lower()
    if "adam" in name or "lamb" in name:
        return "adam"
    if "sgd" in name:
        return "sgd"
    return "other"


def decoupled(optimizer: torch.optim.Optimizer, group: dict[str, Any]) -> bool | None:
    """Whether the group's weight decay is decoupled (AdamW-style) rather than an L2 term."""
    flag = group.get("decoupled_weight_decay")
    if isinstance(flag, bool):
        return flag
    name = type(optimizer).__name__.lower()
    if any(word in name for word in ("adamw", "lion", "lamb", "sgdw", "adafactor")):
        return True
    if type(optimizer).__module__.startswith("torch.optim"):
        return False  # torch's other optimizers add weight_decay·w to the gradient
    return None


def _owners(model: nn.Module) -> dict[int, nn.Module]:
    owners: dict[int, nn.Module] = {}
    for module in model.modules():
        for param in module.parameters(recurse=False):
            owners.setdefault(id(param), module)
    return owners


def _group_doc(
    optimizer: torch.optim.Optimizer,
    index: int,
    group: dict[str, Any],
    names: dict[int, str],
    order: dict[int, int],
) -> dict[str, Any]:
    betas = group.get("betas")
    members = [p for p in group["params"] if id(p) in names]
    members.sort(key=lambda p: order[id(p)])
    return {
        "index": index,
        "lr": number(group.get("lr")),
        "initial_lr": number(group.get("initial_lr")),
        "betas": [number(b) for b in betas] if isinstance(betas, (tuple, list)) else None,
        "eps": number(group.get("eps")),
        "weight_decay": number(group.get("weight_decay")),
        "decoupled": decoupled(optimizer, group),
        "momentum": number(group.get("momentum")),
        "nesterov": group.get("nesterov") if isinstance(group.get("nesterov"), bool) else None,
        "dampening": number(group.get("dampening")),
        "amsgrad": group.get("amsgrad") if isinstance(group.get("amsgrad"), bool) else None,
        "params": [names[id(p)] for p in members],
    }


def describe_scheduler(scheduler: Any) -> dict[str, Any] | None:
    """Class, module, and where knowable the planned optimizer steps and warmup steps."""
    if scheduler is None:
        return None
    planned, warmup = scheduler_span(scheduler)
    return {
        "class": type(scheduler).__name__,
        "module": type(scheduler).__module__,
        "planned_steps": planned,
        "warmup_steps": warmup,
    }


def _positive_int(value: Any) -> int | None:
    value = number(value)
    if value is None or value < 0:
        return None
    return int(round(value))


def scheduler_span(scheduler: Any) -> tuple[int | None, int | None]:
    """``(planned_steps, warmup_steps)`` of a scheduler, ``None`` where it does not say."""
    name = type(scheduler).__name__
    lr_scheduler = torch.optim.lr_scheduler
    if isinstance(scheduler, lr_scheduler.OneCycleLR):
        total = _positive_int(scheduler.total_steps)
        phases = getattr(scheduler, "_schedule_phases", None)
        warmup = None
        if phases and isinstance(phases[0], dict):
            end = number(phases[0].get("end_step"))
            warmup = None if end is None else int(round(end)) + 1
        return total, warmup
    if isinstance(scheduler, lr_scheduler.SequentialLR):
        inner = getattr(scheduler, "_schedulers", [])
        first = inner[0] if inner else None
        warmup = None
        if isinstance(first, lr_scheduler.LinearLR):
            warmup = _positive_int(first.total_iters)
        return None, warmup
    if isinstance(scheduler, lr_scheduler.LinearLR):
        start, end = number(scheduler.start_factor), number(scheduler.end_factor)
        rising = start is not None and end is not None and start < end
        return None, _positive_int(scheduler.total_iters) if rising else None
    if type(scheduler).__module__.startswith("timm"):
        if getattr(scheduler, "t_in_epochs", True) is not False:
            return None, None  # in epochs: not optimizer steps
        return _positive_int(getattr(scheduler, "t_initial", None)), _positive_int(
            getattr(scheduler, "warmup_t", None)
        )
    if name == "WarmupDecay" or (
        hasattr(scheduler, "total_steps") and hasattr(scheduler, "warmup_steps")
    ):
        return _positive_int(getattr(scheduler, "total_steps", None)), _positive_int(
            getattr(scheduler, "warmup_steps", None)
        )
    return None, None


def _closure_decay(fn: Any, depth: int = 0) -> float | None:
    """A float in (0, 1) held in ``fn``'s closure (or that of a function it wraps)."""
    if fn is None or depth > 3:
        return None
    fn = getattr(fn, "__func__", fn)  # a bound method: its function
    for cell in getattr(fn, "__closure__", None) or ():
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if isinstance(value, float) and 0.0 < value < 1.0:
            return value
        if isinstance(value, Tensor) and value.numel() == 1 and value.is_floating_point():
            found = number(value)
            if isinstance(found, float) and 0.0 < found < 1.0:
                return found
    for cell in getattr(fn, "__closure__", None) or ():
        try:
            value = cell.cell_contents
        except ValueError:
            continue
        if callable(value) and not isinstance(value, type):
            found = _closure_decay(value, depth + 1)
            if found is not None:
                return found
    return _closure_decay(getattr(fn, "__wrapped__", None), depth + 1)


def ema_decay(ema: Any, step: int | None = None) -> tuple[float | None, str | None]:
    """The decay in effect and where it was read: ``get_decay`` (timm, ``tricks.ModelEma``),
    the ``decay`` attribute, or the closure of an ``AveragedModel``'s averaging function."""
    get_decay = getattr(ema, "get_decay", None)
    if callable(get_decay) and step is not None:
        try:
            value = number(get_decay(step))
        except Exception:  # a foreign signature: fall back to the attribute
            value = None
        if value is not None:
            return float(value), "get_decay"
    value = number(getattr(ema, "decay", None))
    if value is not None:
        return float(value), "attr"
    if isinstance(ema, torch.optim.swa_utils.AveragedModel):
        for fn in (getattr(ema, "multi_avg_fn", None), getattr(ema, "avg_fn", None)):
            found = _closure_decay(fn)
            if found is not None:
                return found, "closure"
    return None, None


def describe_ema(ema: Any) -> dict[str, Any] | None:
    """Class, decay and where the decay was read."""
    if ema is None:
        return None
    decay, source = ema_decay(ema)
    return {"class": type(ema).__name__, "decay": decay, "decay_source": source}


def describe_scaler(scaler: Any) -> dict[str, Any] | None:
    """Class and whether it scales."""
    if scaler is None:
        return None
    enabled = scaler.is_enabled() if callable(getattr(scaler, "is_enabled", None)) else None
    return {"class": type(scaler).__name__, "enabled": enabled}


def describe(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    scaler: Any = None,
    scheduler: Any = None,
    ema: Any = None,
    total_steps: int | None = None,
    drop_paths: list[dict[str, Any]] | None = None,
    every: int | None = None,
    hist_every: int | None = None,
) -> dict[str, Any]:
    """The setup document of ``docs/diagnosis.md`` §1 (every key present, unknowns ``None``).

    Args:
        model: Named as ``watch`` names it (inside DDP/compile wrappers).
        drop_paths: The DropPath modules found (``probes.drop_path.describe``).
    """
    inner = unwrap(model)
    named = list(inner.named_parameters())
    names = {id(p): n for n, p in named}
    order = {id(p): i for i, (_, p) in enumerate(named)}
    owners = _owners(inner)
    group_of: dict[int, int] = {}
    for index, group in enumerate(optimizer.param_groups):
        for param in group["params"]:
            group_of.setdefault(id(param), index)
    params = []
    for name, param in named:
        owner = owners.get(id(param), inner)
        params.append(
            {
                "name": name,
                "shape": list(param.shape),
                "module": type(owner).__name__,
                "kind": param_kind(name, param, owner),
                "group": group_of.get(id(param)),
                "requires_grad": bool(param.requires_grad),
            }
        )
    groups = [
        _group_doc(optimizer, i, g, names, order) for i, g in enumerate(optimizer.param_groups)
    ]
    sched = describe_scheduler(scheduler)
    planned: int | None = None
    source: str | None = None
    if total_steps is not None:
        planned, source = total_steps, "watch"
    elif sched is not None and sched["planned_steps"] is not None:
        planned, source = sched["planned_steps"], "scheduler"
    return {
        "version": SETUP_VERSION,
        "optimizer": {
            "class": type(optimizer).__name__,
            "module": type(optimizer).__module__,
            "family": optimizer_family(optimizer),
            "groups": groups,
        },
        "params": params,
        "drop_path": list(drop_paths or []),
        "scaler": describe_scaler(scaler),
        "scheduler": sched,
        "ema": describe_ema(ema),
        "planned_steps": planned,
        "planned_steps_source": source,
        "every": every,
        "hist_every": hist_every,
    }
