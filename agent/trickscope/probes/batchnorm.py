"""How many samples each BatchNorm layer's batch statistics come from, per forward.

A BatchNorm layer in training mode normalises with the mean and variance of the batch it is
given: under gradient accumulation that is one micro-batch, not the accumulated batch. The
probe reads the batch dimension of the input (host metadata: no device work, no sync) on armed
forwards; a ``SyncBatchNorm`` counts every rank of its process group. Layers in eval mode (frozen
statistics) normalise with their running statistics and are not counted, nor are LayerNorm,
GroupNorm and other per-sample norms. Unarmed, each hook costs one attribute test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from trickscope._incidents import Incidents
from trickscope._modules import unwrap
from trickscope.probes._hook import Hook


@dataclass
class Site:
    """One BatchNorm module and the smallest batch it normalised over since the last take."""

    name: str
    module: nn.Module
    smallest: int | None = None
    handles: list[Any] = field(default_factory=list)


def find(model: nn.Module) -> list[Site]:
    """Every BatchNorm module of ``model`` (``_BatchNorm`` subclasses, ``SyncBatchNorm``
    included) in module order."""
    return [
        Site(name or type(module).__name__, module)
        for name, module in unwrap(model).named_modules()
        if isinstance(module, _BatchNorm)
    ]


def _replicas(module: nn.Module) -> int:
    """Ranks whose samples a ``SyncBatchNorm`` pools (1 for any other BatchNorm, or when no
    process group is initialised: then SyncBatchNorm normalises locally)."""
    if not isinstance(module, nn.SyncBatchNorm):
        return 1
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return 1
    group = module.process_group
    return int(dist.get_world_size(group) if group is not None else dist.get_world_size())


class BatchNormProbe:
    """Forward pre-hooks on each BatchNorm module, recording batch sizes on armed forwards."""

    def __init__(self, sites: list[Site], incidents: Incidents) -> None:
        self.sites = sites
        self.armed = False
        self._incidents = incidents
        for site in sites:
            site.handles.append(site.module.register_forward_pre_hook(Hook(self._on_forward(site))))

    def _on_forward(self, site: Site) -> Any:
        def hook(module: nn.Module, args: Any) -> None:
            if not self.armed or not module.training:
                return
            try:
                x = args[0] if isinstance(args, tuple) and args else None
                if not isinstance(x, Tensor) or x.ndim < 2:
                    return
                samples = int(x.shape[0]) * _replicas(module)  # a shape: host metadata
                if site.smallest is None or samples < site.smallest:
                    site.smallest = samples
            except Exception as exc:
                self._incidents.error("batchnorm probe", exc)

        return hook

    def take(self) -> tuple[str, int] | None:
        """The BatchNorm module (first in model order among ties) that normalised over the
        fewest samples in one forward since the last take, and that count; resets them."""
        best: tuple[str, int] | None = None
        for site in self.sites:
            if site.smallest is not None and (best is None or site.smallest < best[1]):
                best = (site.name, site.smallest)
            site.smallest = None
        return best

    def close(self) -> None:
        """Remove the hooks."""
        for site in self.sites:
            for handle in site.handles:
                handle.remove()
            site.handles = []
