"""Whether the modules that act differently in training are in training mode when the optimizer
steps.

Dropout and DropPath are identities in eval mode, and BatchNorm normalises with its frozen
running statistics: a model left in eval mode after an evaluation (``model.eval()`` without
``model.train()``) trains without its regularisation and with stale normalisation. The probe
reads the modules' ``training`` flags on due steps: Python attributes, no device work.
"""

from __future__ import annotations

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd

from trickscope._modules import unwrap
from trickscope.probes.drop_path import is_drop_path


class TrainModeProbe:
    """The share of a model's dropout-like and BatchNorm modules in training mode."""

    def __init__(self, model: nn.Module) -> None:
        modules = list(unwrap(model).modules())
        self._dropouts = [
            m for m in modules if (isinstance(m, _DropoutNd) and m.p > 0) or is_drop_path(m)
        ]
        self._norms = [m for m in modules if isinstance(m, _BatchNorm)]

    def take(self) -> list[tuple[str, float]]:
        """``mode/dropout_training`` and ``mode/batchnorm_training``: the share of each kind in
        training mode now, for the kinds the model has."""
        found = []
        for name, modules in (("dropout", self._dropouts), ("batchnorm", self._norms)):
            if modules:
                share = sum(m.training for m in modules) / len(modules)
                found.append((f"mode/{name}_training", share))
        return found
