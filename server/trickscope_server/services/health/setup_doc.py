"""Reading the setup document (docs/diagnosis.md, section 1), falling back to config keys.

The agent declares the setup at ``watch``; runs recorded without it (older agents, ``log`` only)
still name their optimizer, betas and length in the config, under the keys people use
(``optimizer``, ``betas``, nanoGPT's ``beta1``/``beta2``/``max_iters``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from trickscope_server.services.health.model import RunView
from trickscope_server.services.health.series import last

_PLANNED_KEYS = ("total_steps", "max_steps", "max_iters", "planned_steps", "num_steps")
# Lightning's, Hugging Face's and the usual hand-written names for micro-batches per step.
_ACCUMULATION_KEYS = (
    "accumulate_grad_batches",
    "gradient_accumulation_steps",
    "grad_accum_steps",
    "grad_accum",
    "accum_steps",
    "accumulation_steps",
    "accumulation",
)


def number(value: Any) -> float | None:
    """A finite number, or None (bools and strings are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def section(view: RunView, key: str) -> Mapping[str, Any] | None:
    """A mapping-valued section of the setup (``optimizer``, ``scheduler``, ``ema``...)."""
    value = view.setup.get(key) if isinstance(view.setup, Mapping) else None
    return value if isinstance(value, Mapping) else None


def groups(view: RunView) -> list[Mapping[str, Any]]:
    """The optimizer's param groups from the setup."""
    optimizer = section(view, "optimizer")
    found = optimizer.get("groups") if optimizer else None
    return [g for g in found if isinstance(g, Mapping)] if isinstance(found, list) else []


def params(view: RunView) -> list[Mapping[str, Any]]:
    """The parameters from the setup, in model order."""
    found = view.setup.get("params") if isinstance(view.setup, Mapping) else None
    return [p for p in found if isinstance(p, Mapping)] if isinstance(found, list) else []


def optimizer_class(view: RunView) -> str | None:
    """The optimizer's class name: the setup's, else the ``optimizer`` config key."""
    optimizer = section(view, "optimizer")
    if optimizer and isinstance(optimizer.get("class"), str):
        return str(optimizer["class"])
    value = view.config.get("optimizer")
    return value if isinstance(value, str) else None


def family(view: RunView) -> str | None:
    """``adam``, ``sgd``, ``other``, or None when nothing says."""
    optimizer = section(view, "optimizer")
    if optimizer and optimizer.get("family") in ("adam", "sgd", "other"):
        return str(optimizer["family"])
    name = (optimizer_class(view) or "").lower()
    if "adam" in name:
        return "adam"
    if "sgd" in name:
        return "sgd"
    if name:
        return "other"
    # Adam's betas or the optimizer reporter's β2 series only exist for Adam-family optimizers.
    if "opt/beta2/group0" in view.summaries or number(view.config.get("beta2")) is not None:
        return "adam"
    return None


def _betas(value: Any) -> tuple[float, float] | None:
    if isinstance(value, (list, tuple)) and len(value) == 2:
        b1, b2 = number(value[0]), number(value[1])
        if b1 is not None and b2 is not None:
            return b1, b2
    return None


def beta2(view: RunView) -> float | None:
    """Adam's β2 of the first param group: setup, reporter series, then config keys."""
    for group in groups(view)[:1]:
        betas = _betas(group.get("betas"))
        if betas is not None:
            return betas[1]
    value = last(view, "opt/beta2/group0")
    if value is not None and math.isfinite(value):
        return value
    betas = _betas(view.config.get("betas"))
    if betas is not None:
        return betas[1]
    return number(view.config.get("beta2"))


def planned_steps(view: RunView) -> int | None:
    """The planned number of optimizer steps: the setup's, else a config key that says it."""
    planned = number(view.setup.get("planned_steps")) if isinstance(view.setup, Mapping) else None
    if planned is None:
        planned = next(
            (p for key in _PLANNED_KEYS if (p := number(view.config.get(key))) is not None), None
        )
    return int(planned) if planned is not None and planned > 0 else None


def declared_accumulation(view: RunView) -> int | None:
    """Micro-batches per optimizer step as the config declares them (looked for up to three
    levels deep: integrations nest their settings), or None."""

    def find(config: Mapping[str, Any], depth: int) -> int | None:
        for key in _ACCUMULATION_KEYS:
            value = number(config.get(key))
            if value is not None and value >= 1 and value == int(value):
                return int(value)
        if depth < 3:
            for value in config.values():
                if isinstance(value, Mapping) and (found := find(value, depth + 1)) is not None:
                    return found
        return None

    return find(view.config, 1) if isinstance(view.config, Mapping) else None
