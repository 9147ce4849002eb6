"""Weight decay on norm gains, biases and embeddings, Adam's coupled L2 term, and decay so
strong that it erases the weights within a few hundred steps.

Decaying 1-D parameters pulls norm gains towards zero and biases towards the origin for no
regularisation benefit (timm's ``param_groups_weight_decay``, nanoGPT's ``configure_optimizers``);
in Adam an L2 term is divided by √v̂ and is not weight decay (Loshchilov & Hutter 2019,
https://arxiv.org/abs/1711.05101). Decay shrinks the weights by ``lr·λ`` a step (``lr·λ/(1−μ)``
for SGD's L2 term carried in momentum), so ``1/(lr·λ)`` steps is the horizon over which the
weights forget what they learned (Wang & Aitchison 2024, https://arxiv.org/abs/2405.13698).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from trickscope_server.services.health import setup_doc
from trickscope_server.services.health.model import Finding, NotApplicable, RunView, finding, rule
from trickscope_server.services.health.series import read_finite

SMALL_COUPLED_DECAY = 1e-3  # SGD-style L2 this small barely moves norm gains or biases
# A shrink above this share per step forgets the weights within 200 steps: ten times stronger
# than the strong end of common recipes (AdamW lr 1e-3 with λ 0.3, SGD lr 0.4 with λ 5e-4).
STRONG_SHRINK = 5e-3
# ... and it did: the free weights (not followed by a normalisation) ended below this share of
# their first norm. A weight a normalisation follows is scale-invariant: decay only raises its
# effective learning rate (van Laarhoven 2017, https://arxiv.org/abs/1706.05350), so its shrinking
# is no harm.
COLLAPSED = 0.5


def _decayed_groups(view: RunView) -> dict[int, Mapping[str, Any]]:
    found = {}
    for position, group in enumerate(setup_doc.groups(view)):
        decay = setup_doc.number(group.get("weight_decay"))
        if decay is not None and decay > 0:
            index = group.get("index")
            found[index if isinstance(index, int) else position] = group
    return found


def _listed(names: list[str]) -> str:
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    return f"{', '.join(names[:3])}{more}"


@rule("decay-on-norm-bias", "Weight decay on norm weights, biases and embeddings")
def decay_on_norm_bias(view: RunView) -> Iterable[Finding]:
    """Parameters of kind norm, bias or embedding in a param group with weight decay > 0."""
    params = setup_doc.params(view)
    if not params or not setup_doc.groups(view):
        raise NotApplicable("no setup with parameters and param groups was declared")
    decayed = _decayed_groups(view)
    if not decayed:
        return []
    hit: dict[str, list[str]] = {"norm": [], "embedding": [], "bias": []}
    decays: list[float] = []
    coupled = False
    for param in params:
        group = decayed.get(param.get("group"))  # type: ignore[arg-type]
        kind, name = param.get("kind"), param.get("name")
        if group is None or kind not in hit or not isinstance(name, str):
            continue
        if param.get("requires_grad") is False:
            continue
        hit[str(kind)].append(name)
        decays.append(float(group["weight_decay"]))
        coupled = coupled or group.get("decoupled") is False
    names = hit["norm"] + hit["embedding"] + hit["bias"]
    if not names:
        return []
    family = setup_doc.family(view)
    small_sgd = coupled and family == "sgd" and max(decays) < SMALL_COUPLED_DECAY
    # Embeddings are decayed on purpose in some recipes (nanoGPT decays wte and wpe): worth
    # knowing, not a mistake. Norm gains pulled towards zero are.
    severe = bool(hit["norm"]) and not small_sgd
    kinds = [k for k in ("norm", "embedding", "bias") if hit[k]]
    label = {"norm": "norm weights", "embedding": "embeddings", "bias": "biases"}
    return [
        finding(
            "decay-on-norm-bias",
            "warning" if severe else "info",
            f"Weight decay {max(decays):g} applies to {len(names)} "
            f"{' and '.join(label[k] for k in kinds)}: {_listed(names)}",
            why="Decay on normalisation gains shrinks the scales the network learns, on "
            "embeddings it penalises rare tokens most, and on biases it only adds noise: none of "
            "them overfit the way weight matrices do.",
            remedy="Put 1-D parameters and embeddings in a param group with weight_decay=0 "
            "(timm's param_groups_weight_decay, nanoGPT's configure_optimizers).",
            layer=names[0],
            params=names[:50],
            count=len(names),
            norm=len(hit["norm"]),
            embedding=len(hit["embedding"]),
            bias=len(hit["bias"]),
            weight_decay=max(decays),
        )
    ]


@rule("adam-coupled-l2", "Adam with an L2 term instead of decoupled weight decay")
def adam_coupled_l2(view: RunView) -> Iterable[Finding]:
    """``Adam(weight_decay>0)`` without decoupling: the decay is scaled by 1/√v̂ per element."""
    groups = setup_doc.groups(view)
    if not groups:
        raise NotApplicable("no setup with param groups was declared")
    if setup_doc.family(view) != "adam":
        raise NotApplicable("the optimizer is not Adam-family")
    coupled = [
        g
        for g in groups
        if g.get("decoupled") is False and (setup_doc.number(g.get("weight_decay")) or 0) > 0
    ]
    if not coupled:
        return []
    decay = max(float(g["weight_decay"]) for g in coupled)
    name = setup_doc.optimizer_class(view) or "Adam"
    return [
        finding(
            "adam-coupled-l2",
            "warning",
            f"{name} adds weight_decay={decay:g} to the gradient (L2), not as decoupled decay",
            why="Adam divides the L2 term by √v̂, so parameters with large gradients are barely "
            "decayed and the regularisation is not weight decay (Loshchilov & Hutter 2019).",
            remedy="Use AdamW (or decoupled_weight_decay=True) with the same weight_decay.",
            weight_decay=decay,
            groups=[g.get("index") for g in coupled],
        )
    ]


def _peak_lr(view: RunView, index: int, group: Mapping[str, Any]) -> float | None:
    """The group's highest realised LR, else its declared one (``initial_lr``, then ``lr``)."""
    name = f"lr/group{index}"
    if name in view.summaries:
        _, lrs = read_finite(view, name)
        if lrs.size:
            return float(lrs.max())
    for key in ("initial_lr", "lr"):
        value = setup_doc.number(group.get(key))
        if value is not None:
            return value
    return None


def _shrink_per_step(group: Mapping[str, Any], lr: float, decay: float) -> float | None:
    """The share of each weight that decay takes away per optimizer step at this LR."""
    if group.get("decoupled") is True:
        return lr * decay
    momentum = setup_doc.number(group.get("momentum")) or 0.0
    if group.get("decoupled") is False and 0 <= momentum < 1:
        return lr * decay / (1 - momentum)  # the L2 gradient accumulates in the momentum buffer
    return None  # Adam's coupled L2 is divided by √v̂: no fixed shrink (adam-coupled-l2)


def _free_weights(view: RunView, groups: set[int]) -> list[str]:
    """Weight matrices in ``groups`` whose next module (in declaration order) is not a
    normalisation: their scale is their output's scale."""
    params = [p for p in setup_doc.params(view) if isinstance(p.get("name"), str)]
    found = []
    for i, param in enumerate(params):
        if param.get("kind") != "weight" or param.get("group") not in groups:
            continue
        module = str(param["name"]).rpartition(".")[0]
        following = next(
            (p for p in params[i + 1 :] if str(p["name"]).rpartition(".")[0] != module), None
        )
        if following is None or following.get("kind") != "norm":
            found.append(str(param["name"]))
    return found


def _shrunk(view: RunView, layers: list[str]) -> float | None:
    """The median, over ``layers`` with a weight norm, of last norm / first norm."""
    ratios = []
    for layer in layers:
        _, norms = read_finite(view, f"weight_norm/{layer}")
        if norms.size >= 2 and norms[0] > 0:
            ratios.append(float(norms[-1] / norms[0]))
    return float(np.median(ratios)) if ratios else None


@rule("weight-decay-strength", "Weight decay strong enough to erase the weights")
def weight_decay_strength(view: RunView) -> Iterable[Finding]:
    """Param groups whose decay shrinks the weights by more than STRONG_SHRINK per step, where
    their free weights (no normalisation after them) did shrink below COLLAPSED of their start."""
    if not setup_doc.groups(view):
        raise NotApplicable("no setup with param groups was declared")
    if setup_doc.family(view) == "adam" and all(
        g.get("decoupled") is False for g in setup_doc.groups(view)
    ):
        raise NotApplicable("Adam's L2 term has no fixed shrink per step (see adam-coupled-l2)")
    strong = []
    for index, group in _decayed_groups(view).items():
        lr = _peak_lr(view, index, group)
        shrink = _shrink_per_step(group, lr, float(group["weight_decay"])) if lr else None
        if shrink is not None and shrink > STRONG_SHRINK:
            strong.append((shrink, index, float(group["weight_decay"]), lr))
    if not strong:
        return []
    shrink, index, decay, lr = max(strong)
    free = _free_weights(view, {g for _, g, _, _ in strong})
    ratio = _shrunk(view, free)
    if ratio is None or ratio >= COLLAPSED:
        return []  # normalised weights only, or free ones that held their size
    horizon = 1 / shrink
    return [
        finding(
            "weight-decay-too-strong",
            "warning",
            f"Weight decay {decay:g} at LR {lr:g} shrinks param group {index}'s weights by "
            f"{100 * shrink:.2g} % a step",
            why=f"Without gradients the weights would fall to 1/e in {horizon:.0f} steps, and the "
            f"weights no normalisation follows did fall, to {100 * ratio:.0f} % of their first "
            "norm (median): the decay, not the data, sets their size, and the model forgets "
            "what it learned that fast.",
            remedy="Use a weight decay in the usual range (AdamW 0.01–0.1, SGD 1e-5–5e-4), "
            "keeping lr·weight_decay far below 1e-3 per step.",
            group=index,
            groups=[g for _, g, _, _ in sorted(strong, reverse=True)],
            weight_decay=decay,
            lr=lr,
            shrink_per_step=shrink,
            horizon_steps=horizon,
            free_weight_norm_ratio=ratio,
            free_weights=free[:20],
        )
    ]
