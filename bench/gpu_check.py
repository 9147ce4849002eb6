"""GPU check: zero host syncs from the agent, and its overhead against plain training.

    python bench/gpu_check.py                               # CUDA: ResNet-50 and ViT-B/16
    python bench/gpu_check.py --device cpu --steps 3 --rounds 1 --small   # smoke test, any machine

Per model: warm-up, then ``--steps`` steps with every statistic and every histogram due at every
step under ``torch.cuda.set_sync_debug_mode("error")`` (any host sync on the training thread
raises), then plain training, the default cadence and every scalar statistic at every step (with
the fused row kernels of ``trickscope.row_kernels``, then with torch ops alone), timed step by
step in alternating blocks, medians compared. Exits non-zero when a sync was caught, the agent
recorded an error, or the row kernels failed on CUDA where Triton is installed (the overhead
target, ≤ 1 % on a GPU, is printed, not enforced: it is a benchmark).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))


def build(name: str, small: bool) -> tuple[nn.Module, tuple[int, ...]]:
    """The model and its input shape (batch, channels, height, width)."""
    if small:
        from models import ResNet18, ViT

        if name == "resnet50":
            return ResNet18(width=8), (4, 3, 32, 32)
        return ViT(image=32, patch=8, dim=32, depth=2, heads=2), (4, 3, 32, 32)
    from torchvision.models import resnet50, vit_b_16

    if name == "resnet50":
        return resnet50(weights=None), (64, 3, 224, 224)
    return vit_b_16(weights=None), (64, 3, 224, 224)


@contextlib.contextmanager
def sync_mode(device: torch.device, mode: str) -> Iterator[None]:
    if device.type != "cuda":
        yield
        return
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode(mode)
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(previous)


def timed(step: Callable[[], None], steps: int, device: torch.device) -> list[float]:
    """Seconds per step, each of ``steps`` steps timed alone (the device drained around it)."""
    times = []
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def profile(step: Callable[[], None], device: torch.device) -> None:
    """Print where a few watched steps spend host and device time (the agent's ranges are
    named ``trickscope.watch.*``)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with torch_profile(activities=activities) as prof:
        for _ in range(5):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    sort = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=12, max_name_column_width=48))
    # The agent's own ops, by host time: what a CPU-bound training loop pays.
    totals: dict[str, list[float]] = {}
    for event in prof.events():
        parent = event.cpu_parent
        while parent is not None and not parent.name.startswith("trickscope."):
            parent = parent.cpu_parent
        if parent is not None:
            entry = totals.setdefault(event.name, [0, 0.0, 0.0])
            entry[0] += 1
            entry[1] += event.self_cpu_time_total
            entry[2] += getattr(event, "self_device_time_total", 0.0)
    print("| agent op (5 steps) | calls | self host µs | self device µs |")
    for name, (calls, host, dev) in sorted(totals.items(), key=lambda kv: -kv[1][1])[:20]:
        print(f"| {name[:48]} | {calls:.0f} | {host:.0f} | {dev:.0f} |")


def allocated(device: torch.device) -> int:
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else 0


def check(name: str, args: argparse.Namespace, journal: str) -> dict[str, Any]:
    import trickscope
    from trickscope import row_kernels

    device = torch.device(args.device)
    torch.manual_seed(0)
    model, shape = build(name, args.small)
    model = model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(shape, device=device)
    y = torch.randint(0, 10, (shape[0],), device=device)
    use_bf16 = device.type == "cuda"

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        run.log({"loss/train": loss.detach()})

    def watch(**cadence: int) -> None:
        """(Re)attach with ``cadence`` and take one untimed step, which builds the buffers."""
        unwatch()
        run.watch(model, optimizer, **cadence)
        step()

    def unwatch() -> None:
        if run._watcher is not None:
            run._watcher.close()
            run._watcher = None

    run = trickscope.init(project="gpu-check", offline=True, journal_dir=journal)
    for _ in range(args.warmup):
        step()
    # 1. Every statistic and every histogram at every step: no host sync may happen.
    before = allocated(device)
    watch(every=1, hist_every=1)
    agent_bytes = allocated(device) - before  # scratch and result buffers the agent keeps
    with sync_mode(device, "error"):
        for _ in range(args.steps):
            step()
    errors = run.incidents.errors
    # The fused row kernels ran through part 1 (on CUDA, where Triton is) unless one failed.
    kernels = row_kernels.usable(device)
    # 2. Overhead: plain, default cadence and every scalar at every step (with the fused row
    # kernels, then with torch ops alone), in alternating blocks so that clock and thermal drift
    # hit all alike; medians over all their steps.
    times: dict[str, list[float]] = {"plain": [], "default": [], "every1": [], "every1_ops": []}
    block = max(args.steps // args.rounds, 1)
    for _ in range(args.rounds):
        unwatch()
        times["plain"] += timed(step, block, device)
        watch()  # the defaults: scalars every 10 steps, histograms every 100
        times["default"] += timed(step, block, device)
        watch(every=1, hist_every=0)
        times["every1"] += timed(step, block, device)
        with row_kernels.use_kernels(False):
            times["every1_ops"] += timed(step, block, device)
    if args.profile:
        profile(step, device)
    run.finish(timeout=10.0)
    base = statistics.median(times["plain"])
    return {
        "plain_ms": 1000 * base,
        "default_pct": 100 * (statistics.median(times["default"]) / base - 1),
        "every1_ms": 1000 * statistics.median(times["every1"]),
        "every1_pct": 100 * (statistics.median(times["every1"]) / base - 1),
        "every1_ops_pct": 100 * (statistics.median(times["every1_ops"]) / base - 1),
        "kernels": kernels,
        "agent_mib": agent_bytes / 2**20,
        "agent_errors": errors + run.incidents.errors,
        "incidents": dict(run.incidents.by_kind),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    # 20-step timing blocks by default: 10 proved too noisy on a shared VM.
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5, help="alternating timing blocks")
    parser.add_argument("--profile", action="store_true", help="profile 5 watched steps per model")
    parser.add_argument("--small", action="store_true", help="tiny models (smoke test)")
    parser.add_argument("--models", nargs="+", default=["resnet50", "vit_b_16"])
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: run with --device cpu --steps 3 --small for a smoke test")
        return 2
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    triton_installed = importlib.util.find_spec("triton") is not None
    print(f"machine: {platform.platform()}, {name or 'cpu'}, torch {torch.__version__}")
    print(
        "| model | plain step (ms) | default cadence | every=1 (ms) | every=1 | "
        "every=1, torch ops only | row kernels | agent GPU memory | host syncs |"
    )
    print("|---|---:|---:|---:|---:|---:|---|---:|---|")
    failed = False
    with tempfile.TemporaryDirectory() as journal:
        for model in args.models:
            try:
                result = check(model, args, journal)
            except RuntimeError as exc:  # set_sync_debug_mode("error") raises on a sync
                print(f"| {model} | | | | | | | | FAILED: {exc} |")
                failed = True
                continue
            errors = result["agent_errors"]
            syncs = "none" if errors == 0 else f"agent errors: {result['incidents']}"
            failed |= errors != 0
            if device.type == "cuda" and triton_installed and not result["kernels"]:
                syncs += "; the row kernels failed (see the warning above)"
                failed = True
            print(
                f"| {model} | {result['plain_ms']:.1f} | {result['default_pct']:+.1f} % | "
                f"{result['every1_ms']:.1f} | {result['every1_pct']:+.1f} % | "
                f"{result['every1_ops_pct']:+.1f} % | {'on' if result['kernels'] else 'off'} | "
                f"{result['agent_mib']:.0f} MiB | {syncs} |"
            )
    print("target: overhead ≤ 1 % on a GPU; zero host syncs from the agent")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
