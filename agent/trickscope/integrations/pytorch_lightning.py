"""pytorch_lightning (the package before ``lightning``): the same callback as
:mod:`trickscope.integrations.lightning`, on ``pytorch_lightning.Callback``.
"""

from __future__ import annotations

try:
    from pytorch_lightning import Callback
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "trickscope.integrations.pytorch_lightning needs the pytorch_lightning package"
    ) from exc

from trickscope.integrations._lightning_core import LightningObserver

__all__ = ["TrickscopeCallback"]


class TrickscopeCallback(LightningObserver, Callback):
    """Streams a Lightning fit to trickscope: per-layer statistics and the default diagnosis
    (``run.watch``), what ``self.log`` logs, the LR schedulers, the gradient clipping Lightning
    applies (with the pre-clip norm), accumulation and precision. Lightning's own loggers keep
    working alongside.

    Example:
        >>> trainer = Trainer(callbacks=[TrickscopeCallback(project="mnist")])
    """
