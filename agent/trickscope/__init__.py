"""trickscope: training diagnostics for PyTorch, streamed to a self-hosted server.

```python
import trickscope

with trickscope.init(project="digits", config={"lr": 0.1}) as run:
    run.watch(model, optimizer, every=10)
    for x, y in loader:
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        run.log({"loss/train": loss})
```
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from trickscope.config import AgentConfig

if TYPE_CHECKING:
    from trickscope import client, integrations, tricks
    from trickscope.client import Api
    from trickscope.journal import replay
    from trickscope.run import Run

__version__ = "0.1.0"

__all__ = [
    "AgentConfig",
    "Api",
    "Run",
    "__version__",
    "client",
    "init",
    "integrations",
    "replay",
    "tricks",
]

logger = logging.getLogger("trickscope")

# Imported on first use, so that ``import trickscope`` needs no torch: the client
# and the command line run on machines that only read runs.
_LAZY_ATTRIBUTES = {
    "Api": ("trickscope.client", "Api"),
    "Run": ("trickscope.run", "Run"),
    "replay": ("trickscope.journal", "replay"),
}
_LAZY_MODULES = frozenset({"client", "integrations", "tricks"})


def __getattr__(name: str) -> Any:
    if name in _LAZY_ATTRIBUTES:
        module, attribute = _LAZY_ATTRIBUTES[name]
        value = getattr(importlib.import_module(module), attribute)
    elif name in _LAZY_MODULES:
        value = importlib.import_module(f"trickscope.{name}")
    else:
        raise AttributeError(f"module 'trickscope' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def init(
    project: str,
    name: str | None = None,
    config: Mapping[str, Any] | None = None,
    tags: Sequence[str] | None = None,
    url: str | None = None,
    token: str | None = None,
    **settings: Any,
) -> Run:
    """Start a run and its background sender; never waits on the network.

    Args:
        project: Groups runs on the dashboard.
        name: Display name (default: the script's name and the start of the run id, e.g.
            ``train-3f2a9c``; ``notebook`` or ``python`` when there is no script).
        config: Hyperparameters; stored JSON-safe (tensors as ``repr``, NaN as ``"NaN"``).
        tags: Free-form labels.
        url: Server base URL (default: ``TRICKSCOPE_URL``, else ``http://127.0.0.1:8000``).
        token: A write token of the server, sent as ``Authorization: Bearer <token>`` (default:
            ``TRICKSCOPE_TOKEN``; a loopback server may run without one).
        **settings: Other :class:`AgentConfig` fields (``disabled``, ``offline``, ``quiet``,
            ``journal_dir``, ``flush_secs``, ...), each falling back to ``TRICKSCOPE_<FIELD>``.

    The run's URL is logged once, at INFO on the ``trickscope`` logger (rank 0 only; not when
    disabled; ``quiet=True`` or ``TRICKSCOPE_QUIET=1`` silences it).

    Returns:
        The :class:`Run`; also a context manager that finishes it (``"failed"`` on an exception).
        Under ``torch.distributed`` call it on every rank, after ``init_process_group``: the job
        is one run, whose id rank 0 hands the others through the process group's store. Rank 0
        streams the per-layer statistics, every rank a small summary under ``rank/<r>/``.

    Raises:
        ValueError: a setting or environment variable is invalid; the message names it.
        TypeError: an argument has the wrong type.

    Example:
        >>> run = trickscope.init(project="digits", config={"lr": 0.1}, disabled=True)
        >>> run.log({"loss/train": 0.5}, step=0)
        >>> run.finish()
    """
    from trickscope import distributed
    from trickscope.run import Run

    agent = AgentConfig.from_env(os.environ, url=url, token=token, **settings)
    rank = distributed.current()
    if rank is None and not agent.disabled and distributed.launched_but_not_initialised(os.environ):
        logger.warning(
            "trickscope: WORLD_SIZE=%s but torch.distributed is not initialised yet, so each "
            "rank starts a run of its own; call trickscope.init after init_process_group",
            os.environ.get("WORLD_SIZE"),
        )
    run_id = None
    if rank is not None and not agent.disabled:
        try:
            run_id = distributed.share_run_id(rank, uuid.uuid4().hex)
        except Exception as exc:  # rank 0 never published one: this rank stays silent
            logger.warning(
                "trickscope: rank %d got no run id from rank 0 (%s: %s); it will not report",
                rank.rank,
                type(exc).__name__,
                exc,
            )
            agent = dataclasses.replace(agent, disabled=True)
    return Run(
        project=project, name=name, config=config, tags=tags, agent=agent, rank=rank, run_id=run_id
    )
