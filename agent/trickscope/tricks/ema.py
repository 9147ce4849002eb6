"""Exponential moving average of model weights (Polyak averaging).

``ν ← α·ν + (1−α)·θ`` after each optimizer step: Polyak & Juditsky 1992,
https://doi.org/10.1137/0330046; Tarvainen & Valpola 2017 ("Mean teachers"),
https://arxiv.org/abs/1703.01780.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Literal

import torch
from torch import nn

from trickscope import _foreach
from trickscope._checks import check_int
from trickscope._modules import unwrap
from trickscope.tricks._sink import Metric, MetricSink, report

BufferPolicy = Literal["average", "copy"]
EmaWarmup = Literal["none", "ratio", "power"]


def ema_module(obj: Any) -> nn.Module:
    """The module holding the averaged weights of an EMA object.

    Accepts :class:`ModelEma`, timm's ``ModelEmaV3`` (and its older versions),
    ``torch.optim.swa_utils.AveragedModel``, a plain module (e.g. a hand-made copy), or an object
    holding the copy as ``module``, ``ema`` or ``shadow``; unwraps DDP and ``torch.compile``.
    """
    if not isinstance(obj, nn.Module):
        # A hand-written EMA object holding its copy (YOLO's ``ModelEMA.ema``).
        for attr in ("module", "ema", "shadow"):
            if isinstance(getattr(obj, attr, None), nn.Module):
                return unwrap(getattr(obj, attr))
        raise TypeError(f"expected an EMA module or nn.Module, got {type(obj)!r}")
    inner = getattr(obj, "module", None)
    is_ema_wrapper = isinstance(obj, (ModelEma, torch.optim.swa_utils.AveragedModel)) or (
        type(obj).__name__.startswith("ModelEma")
    )
    if is_ema_wrapper and isinstance(inner, nn.Module):
        return unwrap(inner)
    return unwrap(obj)


def _float_params(module: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return [(n, p) for n, p in module.named_parameters() if p.is_floating_point()]


def ema_distance(ema: nn.Module, model: nn.Module) -> torch.Tensor:
    """``‖ν − θ‖ / ‖θ‖`` over all floating-point parameters, as a 0-d tensor (no sync).

    ``ema`` may be anything :func:`ema_module` accepts; parameters are matched by name. Computed
    with one foreach subtraction and two foreach norms. Both models must be on the same devices.
    """
    shadow = dict(_float_params(ema_module(ema)))
    pairs = [(shadow[n], p) for n, p in _float_params(unwrap(model)) if n in shadow]
    if not pairs:
        raise ValueError("ema and model share no floating-point parameter names")
    nus = [nu.detach() for nu, _ in pairs]
    thetas = [theta.detach() for _, theta in pairs]
    with torch.no_grad():
        diff_norms = _foreach.norm(_foreach.sub(nus, thetas))
        theta_norms = _foreach.norm(thetas)
        device = thetas[0].device
        num = torch.linalg.vector_norm(
            torch.stack([n.to(device, torch.float32) for n in diff_norms])
        )
        den = torch.linalg.vector_norm(
            torch.stack([n.to(device, torch.float32) for n in theta_norms])
        )
        return num / den.clamp_min(torch.finfo(torch.float32).tiny)


def report_ema(
    run: MetricSink | None,
    ema: nn.Module,
    model: nn.Module,
    step: int,
    decay: float | None = None,
) -> dict[str, Metric]:
    """Report ``ema/distance`` (and ``ema/decay``) for any EMA object at ``step``.

    ``decay`` defaults to ``ema.get_decay(step)`` when the object has one (timm's
    ``ModelEmaV3``, :class:`ModelEma`).
    """
    metrics: dict[str, Metric] = {"ema/distance": ema_distance(ema, model)}
    if decay is None and callable(getattr(ema, "get_decay", None)):
        decay = float(ema.get_decay(step))
    if decay is not None:
        metrics["ema/decay"] = decay
    report(run, metrics, step)
    return metrics


class ModelEma(nn.Module):
    """A shadow copy of a model updated as ``ν ← α·ν + (1−α)·θ`` with one fused lerp.

    Polyak & Juditsky 1992 (https://doi.org/10.1137/0330046); Tarvainen & Valpola 2017
    (https://arxiv.org/abs/1703.01780). The decay ``α`` at global step ``s`` is ``decay`` or,
    with warm-up, ``warmup="ratio"``: ``min(decay, (1 + s) / (10 + s))`` (timm ``ModelEmaV2``/
    TensorFlow ``num_updates`` form), or ``warmup="power"``:
    ``min(decay, 1 − (1 + s/warmup_gamma) ** −warmup_power)`` (timm ``ModelEmaV3``). The
    averaging horizon is about ``update_every / (1 − α)`` optimizer steps.

    Args:
        model: The model to shadow; deep-copied, frozen and put in eval mode.
        decay: The target ``α`` in ``[0, 1]``.
        warmup: Decay warm-up form (see above) or ``"none"``.
        warmup_gamma: Time scale of the power warm-up.
        warmup_power: Exponent of the power warm-up.
        buffers: ``"average"`` lerps floating-point buffers (BatchNorm running statistics) like
            weights; ``"copy"`` copies them from the model. Integer buffers are always copied.
        update_every: Update only on steps where ``step % update_every == 0``.
        run: Receives ``ema/decay`` and ``ema/distance`` on updates where
            ``step % report_every == 0``.
        report_every: Reporting cadence in steps (the distance costs two norm passes).

    Example:
        >>> ema = ModelEma(model, decay=0.999, warmup="ratio", run=run, report_every=100)
        >>> for step in range(total_steps):
        ...     train_step(); optimizer.step()
        ...     ema.update(model, step)
    """

    def __init__(
        self,
        model: nn.Module,
        decay: float = 0.9999,
        *,
        warmup: EmaWarmup = "none",
        warmup_gamma: float = 1.0,
        warmup_power: float = 2.0 / 3.0,
        buffers: BufferPolicy = "average",
        update_every: int = 1,
        run: MetricSink | None = None,
        report_every: int = 1,
    ) -> None:
        super().__init__()
        if not (isinstance(decay, (int, float)) and 0.0 <= decay <= 1.0):
            raise ValueError(f"decay must be a number in [0, 1], got {decay!r}")
        if warmup not in ("none", "ratio", "power"):
            raise ValueError(f"warmup must be 'none', 'ratio' or 'power', got {warmup!r}")
        if not warmup_gamma > 0:
            raise ValueError(f"warmup_gamma must be > 0, got {warmup_gamma!r}")
        if not warmup_power > 0:
            raise ValueError(f"warmup_power must be > 0, got {warmup_power!r}")
        if buffers not in ("average", "copy"):
            raise ValueError(f"buffers must be 'average' or 'copy', got {buffers!r}")
        check_int("update_every", update_every, 1)
        check_int("report_every", report_every, 1)
        self.module = copy.deepcopy(unwrap(model))
        self.module.eval()
        self.module.requires_grad_(False)
        self.decay = float(decay)
        self.warmup = warmup
        self.warmup_gamma = float(warmup_gamma)
        self.warmup_power = float(warmup_power)
        self.buffers_policy = buffers
        self.update_every = update_every
        self.report_every = report_every
        self.run = run
        self.updates = 0

    def get_decay(self, step: int) -> float:
        """The decay ``α`` used at global step ``step``."""
        if self.warmup == "ratio":
            return min(self.decay, (1.0 + step) / (10.0 + step))
        if self.warmup == "power":
            return min(self.decay, 1.0 - (1.0 + step / self.warmup_gamma) ** -self.warmup_power)
        return self.decay

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Move the shadow weights toward ``model``'s after optimizer step ``step``."""
        if step % self.update_every:
            return
        source = unwrap(model)
        decay = self.get_decay(step)
        shadow_params = [p for p in self.module.parameters()]
        model_params = [p.detach() for p in source.parameters()]
        if len(shadow_params) != len(model_params):
            raise ValueError(
                f"model has {len(model_params)} parameters but the EMA has {len(shadow_params)}; "
                "pass the model the EMA was built from"
            )
        lerp_to: list[tuple[torch.Tensor, torch.Tensor]] = []
        copy_to: list[tuple[torch.Tensor, torch.Tensor]] = []
        for s, m in zip(shadow_params, model_params, strict=True):
            (lerp_to if s.is_floating_point() else copy_to).append((s, m))
        for s, m in zip(self.module.buffers(), source.buffers(), strict=True):
            if self.buffers_policy == "average" and s.is_floating_point():
                lerp_to.append((s, m))
            else:
                copy_to.append((s, m))
        _foreach.lerp_([s for s, _ in lerp_to], [m for _, m in lerp_to], 1.0 - decay)
        _foreach.copy_([s for s, _ in copy_to], [m for _, m in copy_to])
        self.updates += 1
        if self.run is not None and step % self.report_every == 0:
            report_ema(self.run, self, source, step, decay)

    @torch.no_grad()
    def set(self, model: nn.Module) -> None:
        """Copy ``model``'s weights and buffers into the shadow (e.g. after loading weights)."""
        source = unwrap(model)
        self.module.load_state_dict(source.state_dict())

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)

    def get_extra_state(self) -> dict[str, Any]:
        return {"updates": self.updates}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.updates = int(state.get("updates", 0))

    def describe(self) -> dict[str, Any]:
        """Static configuration for the run config."""
        horizon = math.inf if self.decay >= 1.0 else self.update_every / (1.0 - self.decay)
        return {
            "decay": self.decay,
            "warmup": self.warmup,
            "buffers": self.buffers_policy,
            "update_every": self.update_every,
            "horizon_steps": horizon,
        }

    def extra_repr(self) -> str:
        return (
            f"decay={self.decay}, warmup={self.warmup!r}, buffers={self.buffers_policy!r}, "
            f"update_every={self.update_every}"
        )
