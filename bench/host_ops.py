"""Host work of one due step of the CUDA statistics: torch ops dispatched and kernels launched.

    python bench/host_ops.py [--models resnet50 vit_b_16]

A GPU training loop bound by the host's kernel launches (many are, at small batch sizes or on a
VM) pays for each op the agent dispatches, whatever the op computes. This counts them for one
step with every scalar statistic due, in the row formulation that CUDA takes, with the fused row
kernels of ``trickscope.row_kernels`` and with torch ops alone. It needs no GPU: the models live
on the meta device (shapes, no memory), and the Triton launches are counted, not run.

It also times that host work: the median of ``--repeats`` due steps on the meta device, where
every op is dispatched but computes nothing: the Python and dispatch time a due step takes from
the training thread on this CPU. Against CUDA it leaves out what a real launch adds (the
driver's few µs per kernel, Triton's launcher) and adds what meta alone does (some ops, ``cat``
and the norms among them, run Python shape functions there that CUDA runs in C++): a comparison
of the two paths on one CPU, not a GPU timing, which is ``bench/gpu_check.py``'s.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent))

from trickscope import _foreach, row_kernels  # noqa: E402
from trickscope._incidents import Incidents  # noqa: E402
from trickscope.watch import Watcher  # noqa: E402

# Ops that launch no kernel: views and allocations from the caching allocator.
_NO_LAUNCH = ("aten.empty", "aten.empty_like", "profiler.")


class OpCounter(TorchDispatchMode):
    """Counts every torch op dispatched inside the block, and those that launch a kernel."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()
        self.launching = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = str(func)
        self.ops[name] += 1
        if not func.is_view and not name.startswith(_NO_LAUNCH):
            self.launching += 1
        return func(*args, **(kwargs or {}))


def due_step(name: str, kernels: bool, repeats: int) -> tuple[int, int, int, int, float]:
    """(tensors, torch ops, of which launch a kernel, Triton launches, median host seconds) of
    one due step."""
    from torchvision.models import resnet50, vit_b_16

    with torch.device("meta"):
        model = resnet50() if name == "resnet50" else vit_b_16()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for param in model.parameters():
        param.grad = torch.empty_like(param)
    watcher = Watcher(
        model, optimizer, every=1, start_step=0, emit=lambda *_: None, incidents=Incidents()
    )
    triton_launches: list[str] = []

    def count_launch(kernel: str, *args: Any, **kwargs: Any) -> bool:
        triton_launches.append(kernel)
        return True

    def step() -> None:  # the optimizer's own work is not the agent's: only the hooks run
        watcher._pre(optimizer, (), {})
        watcher._post(optimizer, (), {})

    saved = _foreach._segmented, row_kernels._devices, row_kernels._launch
    _foreach._segmented = lambda device: True  # the CUDA (row) formulation, here on meta
    row_kernels._devices = ("cuda", "meta")
    row_kernels._launch = count_launch  # type: ignore[assignment]
    try:
        with row_kernels.use_kernels(kernels):
            step()  # builds the layout and the buffers
            triton_launches.clear()
            with OpCounter() as counter:
                step()
            launches = len(triton_launches)
            seconds = []
            for _ in range(repeats):
                start = time.perf_counter()
                step()
                seconds.append(time.perf_counter() - start)
    finally:
        _foreach._segmented, row_kernels._devices, row_kernels._launch = saved
        watcher.close()
    tensors = len(list(model.parameters()))
    return (
        tensors,
        sum(counter.ops.values()),
        counter.launching,
        launches,
        statistics.median(seconds),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet50", "vit_b_16"])
    parser.add_argument("--repeats", type=int, default=200, help="due steps timed per row")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(
        f"machine: {platform.platform()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}; host time: median of {args.repeats} due steps on meta"
    )
    print("| model | parameter tensors | statistics by | torch ops | launching a kernel | "
          "Triton launches | launches in all | host time per due step |")  # fmt: skip
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for name in args.models:
        for kernels in (False, True):
            tensors, ops, launching, triton, host = due_step(name, kernels, args.repeats)
            path = "row kernels" if kernels else "torch ops"
            print(
                f"| {name} | {tensors} | {path} | {ops} | {launching} | {triton} | "
                f"{launching + triton} | {host * 1e3:.2f} ms |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
