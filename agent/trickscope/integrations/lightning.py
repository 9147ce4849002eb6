"""Lightning: ``Trainer(callbacks=[TrickscopeCallback(project="x")])``.

What it observes is described in :mod:`trickscope.integrations._lightning_core`. Needs the
``lightning`` package (``pip install 'trickscope[lightning]'``); for the older
``pytorch_lightning`` package use :mod:`trickscope.integrations.pytorch_lightning`.
"""

from __future__ import annotations

try:
    from lightning.pytorch import Callback
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "trickscope.integrations.lightning needs Lightning: pip install 'trickscope[lightning]'"
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
