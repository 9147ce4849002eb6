"""What the default diagnosis costs the training thread, beside what the statistics cost.

    python bench/diagnosis_cost.py [--models vit_tiny resnet18] [--steps 40] [--threads 2]

Whole-step A/B timings cannot resolve a cost of about 1 % on a shared machine whose step time
drifts by ±5 % (see the agent-overhead table), so this times the agent's own code directly, in
one process: ``watch(model, optimizer)`` as a user types it (offline: the journal takes what a
server would), with timers around the watcher's optimizer hooks (the per-layer statistics), the
diagnosis' optimizer hooks (per-step norms and the first non-finite check, clipping and backward
passes, the setup document, due-step probes) and the probes' module and tensor hooks (forward and
backward). Each is reported per step as a mean over the timed steps and as a share of the median
step, for the default ``check_every=1`` and for ``check_every=10``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

_spent: dict[str, float] = defaultdict(float)


def _timed(label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _spent[label] += time.perf_counter() - start

    return wrapper


def _instrument() -> None:
    """Timers around the hook entry points (before any hook is registered)."""
    from trickscope import diagnose, watch
    from trickscope.probes import _hook

    for cls, label in ((watch.Watcher, "statistics"), (diagnose.Diagnoser, "diagnosis")):
        cls._pre = _timed(label, cls._pre)  # type: ignore[method-assign]
        cls._post = _timed(label, cls._post)  # type: ignore[method-assign]
    _hook.Hook.__call__ = _timed("probe hooks", _hook.Hook.__call__)  # type: ignore[method-assign]


def measure(model_name: str, steps: int, check_every: int, journal: str) -> dict[str, float]:
    """Per-step milliseconds of each part, and the median step."""
    import torch

    import trickscope

    sys.path.insert(0, str(HERE))
    from models import build

    torch.manual_seed(0)
    model = build(model_name)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(32, 3, 64, 64)
    y = torch.randint(0, 10, (32,))
    run = trickscope.init(project="bench", offline=True, journal_dir=journal)
    run.watch(model, optimizer, check_every=check_every)

    def step(index: int) -> float:
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        run.log({"loss": loss.detach()}, step=index)
        return time.perf_counter() - start

    for index in range(3):  # first due step: layouts, scratch buffers, setup document
        step(index)
    _spent.clear()
    times = [step(3 + index) for index in range(steps)]
    run.finish()
    out = {label: 1000 * seconds / steps for label, seconds in _spent.items()}
    out["step"] = 1000 * statistics.median(times)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["vit_tiny", "resnet18"])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import platform

    import torch

    torch.set_num_threads(args.threads)
    _instrument()
    print(f"machine: {platform.platform()}, {args.threads} threads, torch {torch.__version__}")
    print(
        "| model | check_every | median step (ms) | statistics (ms, share) "
        "| diagnosis hooks (ms, share) | probe hooks (ms, share) | diagnosis in all |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as journal:
        for model_name in args.models:
            for check_every in (1, 10):
                row = measure(model_name, args.steps, check_every, journal)
                step = row["step"]

                def part(label: str, row: dict[str, float] = row, step: float = step) -> str:
                    ms = row.get(label, 0.0)
                    return f"{ms:.2f} ({100 * ms / step:.2f} %)"

                added = row.get("diagnosis", 0.0) + row.get("probe hooks", 0.0)
                print(
                    f"| {model_name} | {check_every} | {step:.1f} | {part('statistics')} | "
                    f"{part('diagnosis')} | {part('probe hooks')} | {100 * added / step:.2f} % |"
                )


if __name__ == "__main__":
    main()
