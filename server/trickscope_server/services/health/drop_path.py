"""DropPath (stochastic depth, Huang et al. 2016, https://arxiv.org/abs/1603.09382): a branch
dropped without a residual around it, and rates that do not rise with depth."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from trickscope_server.services.health import setup_doc
from trickscope_server.services.health.model import Finding, NotApplicable, RunView, finding, rule
from trickscope_server.services.health.series import natural, read_finite, with_prefix

UNRESIDUAL_HIGH = 0.5  # share of dropped samples whose block output is all zero


def _module_of(view: RunView, block: str) -> str:
    """The DropPath module inside ``block`` as the setup names it (the block when unknown)."""
    for module in view.setup.get("drop_path") or [] if isinstance(view.setup, dict) else []:
        if isinstance(module, dict) and module.get("parent") == block:
            name = module.get("module")
            if isinstance(name, str) and name:
                return name
    return block


def _unresidual(view: RunView) -> Finding | None:
    """The first block (model order) whose dropped samples zero its whole output."""
    for block in with_prefix(view, "drop_path/unresidual/"):
        steps, shares = read_finite(view, f"drop_path/unresidual/{block}")
        real_steps, realised = read_finite(view, f"drop_path/realised/{block}")
        dropped = set(real_steps[realised > 0].tolist()) if realised.size else set()
        keep = np.array([s in dropped for s in steps.tolist()], dtype=bool)
        if not keep.any() or float(np.median(shares[keep])) <= UNRESIDUAL_HIGH:
            continue
        share = float(np.median(shares[keep]))
        module = _module_of(view, block)
        return finding(
            "drop-path-no-residual",
            "error",
            f"DropPath in {block} zeroes the block's output: no residual around it",
            why=f"On {100 * share:.0f}% of the dropped samples the block's output is all zero, so "
            "DropPath sits on the block as a whole (drop_path(f(x))), not on a residual branch "
            "(x + drop_path(f(x))): dropped samples lose their activations instead of skipping "
            "the block.",
            remedy="Apply DropPath to the branch and add the input back: x = x + drop_path(f(x)).",
            step=int(steps[keep][0]),
            layer=module,
            block=block,
            unresidual_share=share,
        )
    return None


def _rates(view: RunView) -> list[tuple[str, float]]:
    """(block, rate) in model order: the setup's DropPath modules, else the rate series."""
    found = []
    for module in view.setup.get("drop_path") or [] if isinstance(view.setup, dict) else []:
        if isinstance(module, dict):
            rate = setup_doc.number(module.get("rate"))
            name = module.get("parent") or module.get("module")
            if rate is not None and isinstance(name, str):
                found.append((name, rate))
    if found:
        return found
    prefix = "drop_path/rate/"
    blocks = sorted((n[len(prefix) :] for n in view.summaries if n.startswith(prefix)), key=natural)
    return [
        (block, value)
        for block in blocks
        if (value := view.summaries[prefix + block].last_value) is not None
    ]


@rule("drop-path", "DropPath placement and rates")
def drop_path(view: RunView) -> Iterable[Finding]:
    """The branch-without-residual mistake (error) and rates falling with depth (info)."""
    rates = _rates(view)
    measured = with_prefix(view, "drop_path/unresidual/")
    if not rates and not measured:
        raise NotApplicable("no DropPath module was seen")
    found = []
    unresidual = _unresidual(view)
    if unresidual is not None:
        found.append(unresidual)
    falls = [i + 1 for i in range(len(rates) - 1) if rates[i + 1][1] < rates[i][1]]
    if falls:
        block, rate = rates[falls[0]]
        found.append(
            finding(
                "drop-path-order",
                "info",
                f"DropPath rates do not rise with depth: {block} drops less than the block "
                "before it",
                why=f"{block} has rate {rate:g} after {rates[falls[0] - 1][1]:g}. Stochastic "
                "depth works best with rates rising linearly with depth (Huang et al. 2016): "
                "early blocks compute features every later block needs.",
                remedy="Use linearly rising rates (timm: [x.item() for x in torch.linspace(0, "
                "drop_path_rate, depth)]).",
                layer=block,
                rates={name: value for name, value in rates[:50]},
            )
        )
    return found
