"""An in-memory RunView for the health rules, summarised exactly as the server does at ingest."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trickscope_server.services.health import RULES, Finding, NotApplicable, Summary


@dataclass
class Run:
    """Columns by name, plus the run row's fields the rules read."""

    layers: list[str] = field(default_factory=list)
    columns: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    setup: dict[str, Any] = field(default_factory=dict)
    agent_findings: dict[str, dict[str, Any]] = field(default_factory=dict)
    status: str = "finished"
    ranks: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, name: str, values: Any, steps: Any = None) -> Run:
        values = np.asarray(values, dtype=np.float64)
        steps = np.arange(values.size) if steps is None else np.asarray(steps)
        self.columns[name] = (steps.astype(np.int64), values)
        return self

    def values(self, name: str) -> np.ndarray:
        """The values column of a series, to change in place."""
        return self.columns[name][1]

    @property
    def summaries(self) -> dict[str, Summary]:
        out = {}
        for name, (steps, values) in self.columns.items():
            bad = steps[~np.isfinite(values)]
            out[name] = Summary(
                count=int(steps.size),
                last_step=int(steps[-1]),
                last_value=float(values[-1]),
                first_nonfinite_step=int(bad.min()) if bad.size else None,
            )
        return out

    def series(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        return self.columns[name]


def check(run: Run, rule_id: str) -> list[Finding]:
    """The findings of one registered rule (a skip raises NotApplicable)."""
    (registered,) = [r for r in RULES if r.id == rule_id]
    return list(registered(run))


def skipped(run: Run, rule_id: str) -> str | None:
    """The rule's skip reason, or None when it ran."""
    try:
        check(run, rule_id)
    except NotApplicable as exc:
        return exc.reason
    return None


def adam_setup(
    params: list[tuple[str, str]],
    *,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    weight_decay: float = 0.0,
    decoupled: bool = True,
    cls: str = "AdamW",
    family: str = "adam",
    planned: int | None = None,
) -> dict[str, Any]:
    """A setup document (docs/diagnosis.md) with one param group over ``(name, kind)`` params."""
    return {
        "version": 1,
        "optimizer": {
            "class": cls,
            "module": "torch.optim",
            "family": family,
            "groups": [
                {
                    "index": 0,
                    "lr": lr,
                    "initial_lr": lr,
                    "betas": list(betas) if family == "adam" else None,
                    "eps": 1e-8,
                    "weight_decay": weight_decay,
                    "decoupled": decoupled,
                    "momentum": None,
                    "nesterov": None,
                    "dampening": None,
                    "amsgrad": False,
                    "params": [name for name, _ in params],
                }
            ],
        },
        "params": [
            {
                "name": name,
                "shape": [4],
                "module": "Linear",
                "kind": kind,
                "group": 0,
                "requires_grad": True,
            }
            for name, kind in params
        ],
        "drop_path": [],
        "scaler": None,
        "scheduler": None,
        "ema": None,
        "planned_steps": planned,
        "planned_steps_source": "watch" if planned else None,
        "every": 10,
        "hist_every": 100,
    }


def healthy_run(steps: int = 400) -> Run:
    """A run with nothing wrong: warm Adam, falling loss, norms that wobble, a working EMA."""
    rng = np.random.default_rng(0)
    layers = ["conv.weight", "conv.bias", "norm.weight", "head.weight"]
    run = Run(layers=layers)
    run.setup = adam_setup(
        [("conv.weight", "weight"), ("conv.bias", "bias"), ("norm.weight", "norm"),
         ("head.weight", "weight")],
        betas=(0.9, 0.99),
        planned=steps,
    )  # fmt: skip
    for layer in layers:
        run.add(f"grad_norm/{layer}", 0.1 + 0.01 * rng.random(steps))
        run.add(f"weight_norm/{layer}", 1.0 + 0.001 * np.arange(steps))
        run.add(f"update_ratio/{layer}", 1e-3 * (1 + 0.1 * rng.random(steps)))
        run.add(f"grad_zero_frac/{layer}", 0.01 * rng.random(steps))
        run.add(f"grad_dead_units/{layer}", 0.05 + 0.01 * rng.random(steps))
        run.add(f"opt/eps_dominance/{layer}", 0.01 * rng.random(steps))
    run.add("grad_norm/total", 0.2 + 0.02 * rng.random(steps))
    run.add("clip/observed", (rng.random(steps) < 0.1).astype(float))
    run.add("loss/train", 2.0 * np.exp(-np.arange(steps) / 200) + 0.01 * rng.random(steps))
    run.add("lr/group0", np.minimum(1.0, (np.arange(steps) + 1) / 100) * 1e-3)
    run.add("accum/backward_passes", [1.0] * steps)
    run.add("eval/acc_raw", [0.9, 0.95]).add("eval/acc_ema", [0.91, 0.96])
    run.setup["ema"] = {"class": "AveragedModel", "decay": 0.99, "decay_source": "closure"}
    run.add("ema/decay", [0.99] * steps).add("ema/norm", 1.0 + 0.001 * np.arange(steps))
    return run
