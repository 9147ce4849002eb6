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

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from trickscope.config import AgentConfig
from trickscope.journal import replay
from trickscope.run import Run

__version__ = "0.1.0"

__all__ = ["AgentConfig", "Run", "__version__", "init", "replay"]


def init(
    project: str,
    name: str | None = None,
    config: Mapping[str, Any] | None = None,
    tags: Sequence[str] | None = None,
    url: str | None = None,
    **settings: Any,
) -> Run:
    """Start a run and its background sender; never waits on the network.

    Args:
        project: Groups runs on the dashboard.
        name: Display name (default: a timestamp and the start of the run id).
        config: Hyperparameters; stored JSON-safe (tensors as ``repr``, NaN as ``"NaN"``).
        tags: Free-form labels.
        url: Server base URL (default: ``TRICKSCOPE_URL``, else ``http://127.0.0.1:8000``).
        **settings: Other :class:`AgentConfig` fields (``disabled``, ``offline``,
            ``journal_dir``, ``flush_secs``, ...), each falling back to ``TRICKSCOPE_<FIELD>``.

    Returns:
        The :class:`Run`; also a context manager that finishes it (``"failed"`` on an exception).
        Under ``torch.distributed`` only rank 0 streams; other ranks get a run that does nothing.

    Raises:
        ValueError: a setting or environment variable is invalid; the message names it.
        TypeError: an argument has the wrong type.

    Example:
        >>> run = trickscope.init(project="digits", config={"lr": 0.1}, disabled=True)
        >>> run.log({"loss/train": 0.5}, step=0)
        >>> run.finish()
    """
    agent = AgentConfig.from_env(os.environ, url=url, **settings)
    if not agent.disabled and _is_secondary_rank():
        agent = AgentConfig(**{**agent.__dict__, "disabled": True})
    return Run(project=project, name=name, config=config, tags=tags, agent=agent)


def _is_secondary_rank() -> bool:
    distributed = torch.distributed
    return bool(
        distributed.is_available() and distributed.is_initialized() and distributed.get_rank() != 0
    )
