"""Weight-decay parameter groups, and which kind of weight decay an optimizer applies.

With SGD, an L2 term ``λw`` added to the gradient equals decaying the weights by ``lr·λ`` per step.
In Adam the L2 gradient is divided by √v̂, so it is not weight decay; AdamW decouples the decay from
the adaptive step (Loshchilov & Hutter 2019, https://arxiv.org/abs/1711.05101).
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable
from typing import Any, Literal

import torch
from torch import nn

from trickscope._modules import unwrap
from trickscope.tricks._sink import Finding, Metric, MetricSink, report

WeightDecayKind = Literal["decoupled", "coupled_l2", "none"]

_DECOUPLED_CLASSES = frozenset({"AdamW", "Adafactor", "Lion", "Lamb", "LAMB", "AdamWScheduleFree"})
_ADAM_FAMILY = frozenset({"Adam", "NAdam", "RAdam", "Adamax", "AMSGrad"})
_NORM_TYPES = (
    nn.modules.batchnorm._NormBase,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)


def _matches(name: str, patterns: Iterable[str]) -> bool:
    for pattern in patterns:
        if name == pattern or name.startswith(pattern + ".") or fnmatch.fnmatchcase(name, pattern):
            return True
    return False


def param_groups_weight_decay(
    model: nn.Module,
    weight_decay: float,
    *,
    exclude: Iterable[str] = (),
    exclude_1d: bool = True,
) -> list[dict[str, Any]]:
    """Split trainable parameters into a decayed and a non-decayed group.

    Rule: a trainable parameter is decayed exactly when it has at least two dimensions and its
    name matches none of ``exclude``; everything else (biases, norm gains, named exclusions) goes
    to the group with ``weight_decay=0``; frozen parameters are left out and ``requires_grad`` is
    never changed. This is the split of timm's ``param_groups_weight_decay`` and nanoGPT's
    ``configure_optimizers`` (Loshchilov & Hutter 2019, https://arxiv.org/abs/1711.05101).

    Args:
        model: The model whose ``named_parameters()`` are split (inside a DDP or
            ``torch.compile`` wrapper, under the wrapped module's names).
        weight_decay: Decay for the decayed group.
        exclude: Parameter names, module prefixes (``"pos_embed"`` also matches
            ``"pos_embed.weight"``) or ``fnmatch`` patterns (``"*.norm*"``) never decayed.
        exclude_1d: Put every parameter with fewer than two dimensions in the no-decay group.

    Returns:
        Up to two param groups (decayed first, empty groups omitted), each with ``params``,
        ``param_names`` (accepted by torch optimizers) and ``weight_decay``. Pass them to any
        torch optimizer; :func:`describe_param_groups` gives their sizes for the run config.

    Example:
        >>> groups = param_groups_weight_decay(model, 0.05, exclude=["pos_embed", "cls_token"])
        >>> optimizer = torch.optim.AdamW(groups, lr=1e-3)
    """
    if not (isinstance(weight_decay, (int, float)) and math.isfinite(weight_decay)) or (
        weight_decay < 0
    ):
        raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}")
    if isinstance(exclude, str):
        raise TypeError(f"exclude must be a collection of names or patterns, got {exclude!r}")
    patterns = tuple(exclude)
    decay: list[tuple[str, nn.Parameter]] = []
    no_decay: list[tuple[str, nn.Parameter]] = []
    for name, param in unwrap(model).named_parameters():
        if not param.requires_grad:
            continue
        if (exclude_1d and param.ndim <= 1) or _matches(name, patterns):
            no_decay.append((name, param))
        else:
            decay.append((name, param))
    groups: list[dict[str, Any]] = []
    for members, wd in ((decay, float(weight_decay)), (no_decay, 0.0)):
        if members:
            groups.append(
                {
                    "params": [p for _, p in members],
                    "param_names": [n for n, _ in members],
                    "weight_decay": wd,
                }
            )
    return groups


def describe_param_groups(
    groups: torch.optim.Optimizer | list[dict[str, Any]],
) -> dict[str, dict[str, Any]]:
    """Sizes of each param group as a plain dict for the run config.

    Works on the list from :func:`param_groups_weight_decay` or on any optimizer's
    ``param_groups``; names are listed when the group carries ``param_names``.
    """
    source = groups.param_groups if isinstance(groups, torch.optim.Optimizer) else groups
    out: dict[str, dict[str, Any]] = {}
    for i, group in enumerate(source):
        params = list(group["params"])
        out[f"group{i}"] = {
            "weight_decay": group.get("weight_decay", 0.0),
            "tensors": len(params),
            "elements": sum(p.numel() for p in params),
            "names": list(group.get("param_names", [])),
        }
    return out


def weight_decay_kind(optimizer: torch.optim.Optimizer) -> WeightDecayKind:
    """Whether ``optimizer`` applies decoupled decay, an L2 term in the gradient, or none.

    Decoupled: AdamW and other optimizers that shrink weights outside the adaptive step
    (including ``Adam(decoupled_weight_decay=True)``). Coupled: everything else with
    ``weight_decay > 0`` (SGD, Adam, RMSprop, ...), which adds ``λw`` to the gradient.
    """
    decays = [group.get("weight_decay", 0.0) for group in optimizer.param_groups]
    if not any(isinstance(wd, (int, float)) and wd > 0 for wd in decays):
        return "none"
    if type(optimizer).__name__ in _DECOUPLED_CLASSES or any(
        group.get("decoupled_weight_decay", False) for group in optimizer.param_groups
    ):
        return "decoupled"
    return "coupled_l2"


def _no_decay_names(model: nn.Module) -> set[str]:
    """Names of biases, norm-layer parameters and other 1-D parameters."""
    model = unwrap(model)
    names = {n for n, p in model.named_parameters() if p.ndim <= 1}
    for module_name, module in model.named_modules():
        if isinstance(module, _NORM_TYPES) or "norm" in type(module).__name__.lower():
            prefix = f"{module_name}." if module_name else ""
            names.update(prefix + n for n, _ in module.named_parameters(recurse=False))
    return names


def check_weight_decay(
    optimizer: torch.optim.Optimizer, model: nn.Module | None = None
) -> list[Finding]:
    """Flag coupled decay in Adam, decay on biases/norm parameters, and unusual values.

    Parameter names come from ``param_names`` in the groups, else from ``model``.
    """
    findings: list[Finding] = []
    kind = weight_decay_kind(optimizer)
    cls = type(optimizer).__name__
    if kind == "coupled_l2" and cls in _ADAM_FAMILY:
        findings.append(
            Finding(
                "adam_coupled_weight_decay",
                f"{cls}(weight_decay>0) adds an L2 term that Adam divides by sqrt(v), so it is not "
                "weight decay; AdamW (decoupled decay, Loshchilov & Hutter 2019) was probably "
                "meant: use torch.optim.AdamW.",
            )
        )
    names_by_id: dict[int, str] = {}
    if model is not None:
        names_by_id = {id(p): n for n, p in unwrap(model).named_parameters()}
    no_decay = _no_decay_names(model) if model is not None else set()
    for i, group in enumerate(optimizer.param_groups):
        wd = group.get("weight_decay", 0.0)
        if not isinstance(wd, (int, float)) or wd <= 0:
            continue
        limit = 1.0 if kind == "decoupled" else 1e-2
        if wd > limit:
            findings.append(
                Finding(
                    "weight_decay_out_of_range",
                    f"group{i} has weight_decay={wd}, above the usual range for {cls} "
                    f"(<= {limit}); check the value, or whether coupled and decoupled were mixed.",
                    layer=f"group{i}",
                )
            )
        names = list(group.get("param_names", [])) or [
            names_by_id.get(id(p), "") for p in group["params"]
        ]
        for name, param in zip(names, group["params"], strict=False):
            if param.ndim <= 1 or name in no_decay:
                findings.append(
                    Finding(
                        "decay_on_bias_or_norm",
                        f"{name or 'a 1-D parameter'} in group{i} is decayed "
                        f"(weight_decay={wd}); biases and norm gains are usually excluded: build "
                        "groups with trickscope.tricks.param_groups_weight_decay.",
                        layer=name or None,
                    )
                )
    return findings


def report_weight_decay(
    optimizer: torch.optim.Optimizer, run: MetricSink | None, step: int | None = None
) -> dict[str, Metric]:
    """Report ``wd/group{i}`` and the per-step shrink ``wd/shrink/group{i}`` = lr·wd.

    Values are read from ``optimizer.param_groups`` (Python numbers, or tensors for capturable
    optimizers), so this works after any scheduler has run.
    """
    metrics: dict[str, Metric] = {}
    for i, group in enumerate(optimizer.param_groups):
        wd = group.get("weight_decay", 0.0)
        metrics[f"wd/group{i}"] = wd
        metrics[f"wd/shrink/group{i}"] = group["lr"] * wd
    report(run, metrics, step)
    return metrics
