"""Whether the modules that act differently in training are in the right mode: training mode
when the optimizer steps, eval mode when the model is run without gradients.

Dropout and DropPath are identities in eval mode, and BatchNorm normalises with its frozen
running statistics: a model left in eval mode after an evaluation (``model.eval()`` without
``model.train()``) trains without its regularisation and with stale normalisation. The other
way round, an evaluation without ``model.eval()`` scores a dropped-out model and feeds the
evaluation batches into BatchNorm's running statistics. The probe reads the modules' ``training``
flags on due steps, and a forward pre-hook on the model counts forwards run without gradients in
training mode: Python attributes, no device work.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd

from trickscope._modules import unwrap
from trickscope.probes._hook import Hook
from trickscope.probes.drop_path import is_drop_path


class TrainModeProbe:
    """The share of a model's dropout-like and BatchNorm modules in training mode, and the
    forwards run without gradients in training mode."""

    def __init__(self, model: nn.Module) -> None:
        modules = list(unwrap(model).modules())
        self._dropouts = [
            m for m in modules if (isinstance(m, _DropoutNd) and m.p > 0) or is_drop_path(m)
        ]
        self._norms = [m for m in modules if isinstance(m, _BatchNorm)]
        self._nograd_training = 0
        self._handle: Any = None
        if self._dropouts or self._norms:
            # On the model as passed: a torch.compile or DDP wrapper runs it outside its graph.
            self._handle = model.register_forward_pre_hook(Hook(self._forward))

    def _forward(self, module: nn.Module, args: Any) -> None:
        if module.training and not torch.is_grad_enabled():
            self._nograd_training += 1

    def take(self) -> list[tuple[str, float]]:
        """``mode/dropout_training`` and ``mode/batchnorm_training``: the share of each kind in
        training mode now, for the kinds the model has; ``mode/nograd_training_forwards``: the
        forwards without gradients in training mode since the last take."""
        found = []
        for name, modules in (("dropout", self._dropouts), ("batchnorm", self._norms)):
            if modules:
                share = sum(m.training for m in modules) / len(modules)
                found.append((f"mode/{name}_training", share))
        if self._handle is not None:
            found.append(("mode/nograd_training_forwards", float(self._nograd_training)))
            self._nograd_training = 0
        return found

    def take_forwards(self) -> float | None:
        """The forwards without gradients in training mode since the last take, where any
        (an evaluation after the last step), else None; resets."""
        count, self._nograd_training = self._nograd_training, 0
        return float(count) if count else None

    def close(self) -> None:
        """Remove the hook."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
