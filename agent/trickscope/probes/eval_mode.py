"""DropPath modules that still drop in eval mode.

In eval a DropPath must be the identity. A hand-written one that ignores ``self.training``, or a
functional ``drop_path(x, p, training=True)``, keeps dropping: evaluation and inference see
random zeroed branches and rescaled ones. On forwards where the module is in eval mode the probe
records whether its output differs from its input, as a device count read later with the rest of
the check vector (no host sync on the forward). timm's, torchvision's and trickscope's DropPath
return their input object itself in eval: recognised on the host, at no device cost. During
training each hook costs one attribute test; at most :data:`CHECKS` eval forwards per module are
compared between two reads, so a long evaluation pays for a few.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from trickscope._incidents import Incidents
from trickscope.probes._hook import Hook
from trickscope.probes.drop_path import Site as DropPathSite

CHECKS = 4  # eval forwards compared per module between two reads


@dataclass
class Site:
    """One DropPath module and what its eval forwards did since the last take."""

    name: str
    module: nn.Module
    checked: int = 0  # eval forwards looked at
    changed: Tensor | None = None  # float32 count of those whose output differed from the input
    handles: list[Any] = field(default_factory=list)


def _first_tensor(value: Any) -> Tensor | None:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], Tensor):
        return value[0]
    return None


def differs(x: Tensor, out: Tensor) -> Tensor:
    """1.0 when ``out`` differs from ``x`` at an element where ``x`` is not NaN, else 0.0 (a
    float32 device scalar). NaN inputs are left out: NaN != NaN would read as a change."""
    return (torch.ne(out, x) & ~torch.isnan(x)).any().to(torch.float32)


class EvalDropPathProbe:
    """Forward hooks on each DropPath module, comparing output and input in eval mode."""

    def __init__(self, sites: list[DropPathSite], incidents: Incidents) -> None:
        self.sites = [Site(s.name, s.module) for s in sites]
        self._incidents = incidents
        for site in self.sites:
            site.handles.append(site.module.register_forward_hook(Hook(self._on_forward(site))))

    def _on_forward(self, site: Site) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if module.training or site.checked >= CHECKS:
                return
            try:
                x, out = _first_tensor(args), _first_tensor(output)
                if x is None or out is None:
                    return
                site.checked += 1
                if out is x or out.shape != x.shape or not x.is_floating_point():
                    return  # the identity returns its input; a reshaping module is no DropPath
                with torch.no_grad():
                    # Not in place: under inference_mode the result is an inference tensor,
                    # which a later read outside it may use but not update.
                    flag = differs(x.detach(), out.detach())
                    site.changed = flag if site.changed is None else site.changed + flag
            except Exception as exc:
                self._incidents.error("drop-path eval probe", exc)

        return hook

    def take(self) -> list[tuple[str, int, Tensor | None]]:
        """Per module with eval forwards since the last take: its name, how many were looked
        at, and how many changed their input (``None``: none could have); resets them."""
        out = [(s.name, s.checked, s.changed) for s in self.sites if s.checked]
        for site in self.sites:
            site.checked = 0
            site.changed = None
        return out

    def close(self) -> None:
        """Remove the hooks."""
        for site in self.sites:
            for handle in site.handles:
                handle.remove()
            site.handles = []
