"""Hook callables that stay behind when a model is copied.

Users deep-copy a watched model (an EMA of it, ``copy.deepcopy`` for evaluation) or pickle it
with ``torch.save``; a module's hooks go along. A probe's hook copies as a no-op: the copy is not
watched, and the probe (which holds locks and device tensors) is neither copied nor pickled.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _noop(*args: Any, **kwargs: Any) -> None:
    return None


class Hook:
    """Calls ``fn``; a deep copy or an unpickled copy does nothing."""

    __slots__ = ("_fn",)

    def __init__(self, fn: Callable[..., Any]) -> None:
        self._fn = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._fn(*args, **kwargs)

    def __deepcopy__(self, memo: dict[int, Any]) -> Hook:
        return Hook(_noop)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Hook, (_noop,))
