"""``torch.distributed``: which rank this process is, and the run id that every rank shares.

A distributed job is one run. Rank 0 makes up the run id and publishes it in the process group's
key-value store (the TCP or file store every backend rendezvoused through), which the other ranks
read: no collective on the training device, and nothing that depends on the backend. Where the
store is out of reach, a ``broadcast_object_list`` on the default group does the same.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch

logger = logging.getLogger("trickscope")

RUN_ID_TIMEOUT = timedelta(minutes=2)
"""How long a rank waits in ``trickscope.init`` for rank 0's run id (ranks start together)."""

# The n-th init of this process pairs with the n-th init of every other rank.
_inits = itertools.count()


@dataclass(frozen=True)
class Rank:
    """This process's place in the job."""

    rank: int
    world_size: int
    backend: str

    @property
    def primary(self) -> bool:
        """Rank 0: the rank that creates the run and streams the per-layer statistics."""
        return self.rank == 0


def current() -> Rank | None:
    """This process's rank, or ``None`` outside an initialised process group of two or more."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return None
    world_size = dist.get_world_size()
    if world_size < 2:
        return None
    return Rank(dist.get_rank(), world_size, str(dist.get_backend()))


def launched_but_not_initialised(environ: Mapping[str, str]) -> bool:
    """Whether a launcher (``torchrun``, SLURM scripts) set ``WORLD_SIZE`` > 1 but no process
    group is initialised yet: each rank would then start a run of its own."""
    try:
        world_size = int(environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return False
    dist = torch.distributed
    initialised = dist.is_available() and dist.is_initialized()
    return world_size > 1 and not initialised


def share_run_id(rank: Rank, run_id: str) -> str:
    """Rank 0's ``run_id`` on every rank; every rank must call this once per ``init``.

    Raises:
        RuntimeError: rank 0's id did not arrive within :data:`RUN_ID_TIMEOUT`.
    """
    key = f"trickscope/run_id/{next(_inits)}"
    store = _default_store()
    if store is None:
        shared: list[Any] = [run_id if rank.primary else None]
        torch.distributed.broadcast_object_list(shared, src=0)
        return str(shared[0])
    if rank.primary:
        store.set(key, run_id)
        return run_id
    store.wait([key], RUN_ID_TIMEOUT)
    value: bytes = store.get(key)
    return value.decode()


def _default_store() -> Any:
    """The default group's store, or ``None`` where this torch build hides it (private API)."""
    try:
        from torch.distributed.distributed_c10d import _get_default_store

        return _get_default_store()
    except Exception as exc:  # an API that moved: the collective fallback still works
        logger.debug("trickscope: no default store (%s); broadcasting the run id", exc)
        return None
