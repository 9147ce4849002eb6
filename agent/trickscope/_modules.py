"""The module a user wrote, inside the wrappers that rename its parameters."""

from __future__ import annotations

from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside DDP/DataParallel and ``torch.compile`` wrappers.

    Those wrappers prefix every parameter and module name (``module.``, ``_orig_mod.``); the
    agent names series after the module inside, so that a run reads the same with or without
    them, and its layers line up with an unwrapped run's on the compare page. The parameters are
    the same objects either way.
    """
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            inner = model.module
        else:
            inner = getattr(model, "_orig_mod", None)  # torch.compile's OptimizedModule
        if not isinstance(inner, nn.Module):
            return model
        model = inner
