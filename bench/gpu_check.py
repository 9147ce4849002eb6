"""GPU check: zero host syncs from the agent, and its overhead against plain training.

    python bench/gpu_check.py                               # CUDA: ResNet-50 and ViT-B/16
    python bench/gpu_check.py --device cpu --steps 3 --small   # smoke test, any machine

Per model: warm-up, then ``--steps`` steps with every statistic and every histogram due at every
step under ``torch.cuda.set_sync_debug_mode("error")`` (any host sync on the training thread
raises), then plain and watched training (scalar statistics at every step) timed in alternating
blocks, medians compared. Exits non-zero when a sync was caught or a target missed is reported
(the overhead target, ≤ 1 % on a GPU, is printed, not enforced: it is a benchmark).
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

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


def timed(step: Callable[[], None], steps: int, device: torch.device) -> float:
    """Median seconds per step over ``steps`` steps (the device is drained around each)."""
    times = []
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def check(name: str, args: argparse.Namespace, journal: str) -> dict[str, float]:
    import trickscope

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

    run = trickscope.init(project="gpu-check", offline=True, journal_dir=journal)
    for _ in range(args.warmup):
        step()
    # 1. Every statistic and every histogram at every step: no host sync may happen.
    run.watch(model, optimizer, every=1, hist_every=1)
    step()  # the first due step builds and pins the layout's buffers
    with sync_mode(device, "error"):
        for _ in range(args.steps):
            step()
    errors = run.incidents.errors
    # 2. Overhead: plain and watched (scalars at every step) in alternating blocks.
    plain, watched = [], []
    block = max(args.steps // 5, 1)
    for _ in range(5 if not args.small else 1):
        if run._watcher is not None:
            run._watcher.close()
            run._watcher = None
        plain.append(timed(step, block, device))
        run.watch(model, optimizer, every=1, hist_every=0)
        watched.append(timed(step, block, device))
    run.finish(timeout=5.0)
    base, agent = statistics.median(plain), statistics.median(watched)
    return {
        "plain_ms": 1000 * base,
        "watched_ms": 1000 * agent,
        "overhead_pct": 100 * (agent / base - 1),
        "agent_errors": errors + run.incidents.errors,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--small", action="store_true", help="tiny models (smoke test)")
    parser.add_argument("--models", nargs="+", default=["resnet50", "vit_b_16"])
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: run with --device cpu --steps 3 --small for a smoke test")
        return 2
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    print(f"machine: {platform.platform()}, {name or 'cpu'}, torch {torch.__version__}")
    print("| model | plain step (ms) | watched, every=1 (ms) | overhead | host syncs |")
    print("|---|---:|---:|---:|---|")
    failed = False
    with tempfile.TemporaryDirectory() as journal:
        for model in args.models:
            try:
                result = check(model, args, journal)
            except RuntimeError as exc:  # set_sync_debug_mode("error") raises on a sync
                print(f"| {model} | | | | FAILED: {exc} |")
                failed = True
                continue
            syncs = "none" if result["agent_errors"] == 0 else "agent errors (see log)"
            failed |= result["agent_errors"] != 0
            print(
                f"| {model} | {result['plain_ms']:.1f} | {result['watched_ms']:.1f} | "
                f"{result['overhead_pct']:+.1f} % | {syncs} |"
            )
    print("target: overhead ≤ 1 % on a GPU; zero host syncs from the agent")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
