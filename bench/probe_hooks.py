"""What the diagnosis' forward hooks cost a training forward, per call.

    python bench/probe_hooks.py [--calls 200000] [--repeats 7]

The default attach puts a few hooks on the model's forward: a pre-hook on every BatchNorm
(its batch size, read on due steps), a hook on every DropPath (does it still drop in eval
mode), and a pre-hook on the model (a forward without gradients in training mode). Each costs
its call on every forward, due or not. This calls each hook directly, as a forward does, and
prints the median per call over ``--repeats`` rounds beside an empty Python call for scale.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import timeit
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from trickscope._incidents import Incidents
from trickscope.probes import batchnorm, drop_path, eval_mode, train_mode
from trickscope.probes._hook import Hook
from trickscope.tricks import DropPath


def _per_call(call: Callable[[], object], calls: int, repeats: int) -> float:
    """Median nanoseconds per call over ``repeats`` rounds of ``calls`` calls."""
    rounds = timeit.repeat(call, number=calls, repeat=repeats)
    return statistics.median(rounds) / calls * 1e9


def measure(calls: int, repeats: int) -> list[tuple[str, float]]:
    """(hook and situation, ns per call) for each hook the diagnosis installs on a forward."""
    model = nn.Sequential(nn.BatchNorm1d(4), DropPath(0.1))
    incidents = Incidents()
    norms = batchnorm.BatchNormProbe(batchnorm.find(model), incidents)
    evals = eval_mode.EvalDropPathProbe(drop_path.find(model), incidents)
    modes = train_mode.TrainModeProbe(model)
    norm_hook = Hook(norms._on_forward(norms.sites[0]))
    eval_hook = Hook(evals._on_forward(evals.sites[0]))
    mode_hook = Hook(modes._forward)
    x = torch.randn(8, 4)
    args = (x,)

    def eval_forward() -> None:
        evals.sites[0].checked = 0  # every eval forward compared, as the first few are
        eval_hook(model[1], args, x)

    rows = []
    model.train()
    norms.armed = False
    rows.append(("BatchNorm pre-hook, not a due step", lambda: norm_hook(model[0], args)))
    rows.append(("model pre-hook (no_grad in training mode?)", lambda: mode_hook(model, args)))
    rows.append(("DropPath hook, training forward", lambda: eval_hook(model[1], args, x)))
    timed = [(name, _per_call(call, calls, repeats)) for name, call in rows]
    norms.armed = True
    due = _per_call(lambda: norm_hook(model[0], args), calls, repeats)
    timed.append(("BatchNorm pre-hook, due step", due))
    model.eval()
    evaluating = _per_call(eval_forward, calls, repeats)
    timed.append(("DropPath hook, eval forward returning its input", evaluating))
    timed.append(("an empty Python call, for scale", _per_call(lambda: None, calls, repeats)))
    for probe in (norms, evals, modes):
        probe.close()
    return timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000, help="calls per round")
    parser.add_argument("--repeats", type=int, default=7, help="rounds; the median is printed")
    options = parser.parse_args()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=Path(__file__).resolve().parent,
        capture_output=True,
        text=True,
    ).stdout.strip()
    print(f"commit {commit or '?'}, {platform.machine()}, Python {sys.version.split()[0]}")
    print("| hook | per call |\n|---|---:|")
    for name, ns in measure(options.calls, options.repeats):
        print(f"| {name} | {ns / 1000:.2f} µs |")


if __name__ == "__main__":
    main()
