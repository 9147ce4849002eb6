"""DropPath modules found in a model, and a probe of what their drops do to their block.

A DropPath zeroes a sample's residual branch; placed right, its block still outputs ``x`` for
that sample. The probe marks the samples a DropPath dropped (output row all zero, input row
not) and checks whether the parent block's output row is all zero too: then the branch was not
added to a residual (``drop-path-no-residual``). Hooks are armed on due steps only; otherwise
each costs one attribute test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from trickscope._incidents import Incidents
from trickscope._modules import unwrap
from trickscope.probes._hook import Hook

_RATE_ATTRS = ("drop_prob", "p", "drop_rate")


def is_drop_path(module: nn.Module) -> bool:
    """torchvision ``StochasticDepth``, timm and trickscope ``DropPath``, or a class named so."""
    name = type(module).__name__.lower()
    return "droppath" in name or "stochasticdepth" in name


def rate_of(module: nn.Module) -> float | None:
    """The configured drop rate, from ``drop_prob``, ``p`` or ``drop_rate``."""
    for attr in _RATE_ATTRS:
        value = getattr(module, attr, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


@dataclass
class Site:
    """One DropPath module and the block holding it."""

    name: str
    module: nn.Module
    parent_name: str
    parent: nn.Module
    rate: float | None
    # Per sample, whether the last training call dropped it (a bool device vector).
    dropped: Tensor | None = None
    # [dropped, dropped with an all-zero block output, samples], float32, summed over forwards.
    counts: Tensor | None = None
    handles: list[Any] = field(default_factory=list)


def find(model: nn.Module) -> list[Site]:
    """Every DropPath module of ``model`` in module order, with its parent block."""
    inner = unwrap(model)
    sites: list[Site] = []
    for parent_name, parent in inner.named_modules():
        for child_name, child in parent.named_children():
            if is_drop_path(child):
                name = f"{parent_name}.{child_name}" if parent_name else child_name
                sites.append(Site(name, child, parent_name, parent, rate_of(child)))
    return sites


def describe(sites: list[Site]) -> list[dict[str, Any]]:
    """The setup document's ``drop_path`` entries."""
    return [
        {
            "module": s.name,
            "class": type(s.module).__name__,
            "rate": s.rate,
            "parent": s.parent_name,
        }
        for s in sites
    ]


def _first_tensor(value: Any) -> Tensor | None:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], Tensor):
        return value[0]
    return None


def _zero_rows(x: Tensor) -> Tensor:
    return (x.detach().reshape(x.shape[0], -1) == 0).all(1)


class DropPathProbe:
    """Forward hooks on each DropPath module and its parent, recording on armed forwards."""

    def __init__(self, sites: list[Site], incidents: Incidents) -> None:
        self.sites = sites
        self.armed = False
        self._incidents = incidents
        for site in sites:
            site.handles.append(site.module.register_forward_hook(Hook(self._on_drop(site))))
            if site.parent is not site.module:
                site.handles.append(site.parent.register_forward_hook(Hook(self._on_parent(site))))

    def _on_drop(self, site: Site) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if not self.armed or not module.training:
                return
            x, out = _first_tensor(args), _first_tensor(output)
            if x is None or out is None or x.ndim == 0 or out.shape[:1] != x.shape[:1]:
                return
            try:
                with torch.no_grad():
                    # The last call in a parent's forward counts (a module may be used twice).
                    site.dropped = _zero_rows(out) & ~_zero_rows(x)
            except Exception as exc:
                self._incidents.error("drop-path probe", exc)

        return hook

    def _on_parent(self, site: Site) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            dropped, site.dropped = site.dropped, None
            if not self.armed or dropped is None:
                return
            out = _first_tensor(output)
            if out is None or out.ndim == 0 or out.shape[0] != dropped.shape[0]:
                return
            try:
                with torch.no_grad():
                    unresidual = dropped & _zero_rows(out)
                    samples = torch.full((), dropped.shape[0], dtype=torch.float32)
                    counts = torch.stack(
                        [
                            dropped.sum(dtype=torch.float32),
                            unresidual.sum(dtype=torch.float32),
                            samples.to(out.device, non_blocking=True),
                        ]
                    )
                    site.counts = counts if site.counts is None else site.counts + counts
            except Exception as exc:
                self._incidents.error("drop-path probe", exc)

        return hook

    def take(self) -> list[tuple[str, Tensor]]:
        """Per block with a recorded forward: its name and its counts, summed over the block's
        DropPath modules (timm's blocks have two); resets them."""
        out: dict[str, Tensor] = {}
        for site in self.sites:
            if site.counts is not None:
                block = site.parent_name or site.name
                previous = out.get(block)
                out[block] = site.counts if previous is None else previous + site.counts
            site.counts = None
            site.dropped = None
        return list(out.items())

    def close(self) -> None:
        """Remove the hooks."""
        for site in self.sites:
            for handle in site.handles:
                handle.remove()
            site.handles = []
