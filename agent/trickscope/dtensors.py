"""Where a parameter lives across ranks: a DTensor's placements (FSDP2's ``fully_shard``, tensor
parallelism), asked without importing ``torch.distributed.tensor`` where nothing has.

Plain tensors read as held whole by every rank. :mod:`trickscope.sharded` merges the statistics
of sharded parameters with these answers; the diagnosis and the per-rank summary ask them too.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from torch import Tensor, nn

from trickscope._modules import unwrap


def _dtensor_type() -> type | None:
    """``DTensor``, where it has been imported (no DTensor can exist before that)."""
    module = sys.modules.get("torch.distributed.tensor")
    return getattr(module, "DTensor", None)


def is_dtensor(tensor: Any) -> bool:
    """Whether ``tensor`` is a DTensor."""
    kind = _dtensor_type()
    return kind is not None and isinstance(tensor, kind)


def has_dtensors(model: nn.Module) -> bool:
    """Whether any parameter of ``model`` is a DTensor (and a process group is up)."""
    dist = torch.distributed
    if _dtensor_type() is None or not (dist.is_available() and dist.is_initialized()):
        return False
    return any(is_dtensor(param) for param in unwrap(model).parameters())


def local(tensor: Tensor) -> Tensor:
    """This rank's piece of ``tensor`` (a DTensor's local shard, else the tensor), detached."""
    if is_dtensor(tensor):
        with torch.no_grad():
            return tensor.to_local().detach()  # type: ignore[attr-defined]
    return tensor.detach()


def replicated(tensor: Tensor) -> bool:
    """Whether every rank holds all of ``tensor``: a plain tensor, or a DTensor replicated on
    every dimension of its mesh."""
    if not is_dtensor(tensor):
        return True
    return all(placement.is_replicate() for placement in tensor.placements)  # type: ignore[attr-defined]


def counts_here(tensor: Tensor, rank: int) -> bool:
    """Whether this rank's piece of ``tensor`` counts towards its statistics."""
    if not is_dtensor(tensor):
        return rank == 0
    coordinate = tensor.device_mesh.get_coordinate()  # type: ignore[attr-defined]
    if coordinate is None:  # this rank is not on the tensor's mesh
        return False
    placements = tensor.placements  # type: ignore[attr-defined]
    return all(
        placement.is_shard() or index == 0
        for placement, index in zip(placements, coordinate, strict=True)
    )


def rows_whole(tensor: Tensor) -> bool:
    """Whether no row along dim 0 of ``tensor`` is split between ranks: a plain tensor, or a
    DTensor sharded on dim 0 only (FSDP2) or replicated. Its per-row counts (dead units) then
    merge by a sum."""
    if not is_dtensor(tensor):
        return True
    return all(
        placement.is_replicate() or placement.is_shard(0)
        for placement in tensor.placements  # type: ignore[attr-defined]
    )
