"""Training-loop overhead of per-layer statistics: trickscope against its peers, side by side.

    python bench/agent_overhead.py [--models resnet18 vit_tiny] [--rounds 3] [--steps 20]
    python bench/agent_overhead.py --compile ...    # the same with a torch.compile'd model

Every variant runs in a fresh process. A round runs plain training between every two variants
(plain, A, plain, B, ..., plain; the variants' order rotates each round), and a variant's
overhead in a round is against the mean of the two plain runs around it: on a shared machine the
step time drifts by ±10 % over minutes, and this pairing cancels what drifts linearly. Reported:
the median over rounds of those overheads, with each variant's median and mean step, and the
trickscope server's CPU time per timed step (it runs on the same cores, as on a laptop). Each
process warms up for ``--warmup`` steps and ``--warmup-secs`` seconds, past the agent's first
statistics flush: what a tool does once per run stays out of the timed steps. Peers (wandb
offline, TensorBoard) come from the ``bench`` extra: pip install -e '.[bench]'.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
VARIANTS = (
    "plain",
    "trickscope_default",
    "trickscope_every10",
    "trickscope_every1",
    "trickscope_hist1",
    "wandb_all_freq10",
    "wandb_all_freq1",
    "tensorboard_scalars_hist",
)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process ``pid`` so far (Linux ``/proc``; None elsewhere)."""
    if pid <= 0:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def worker(args: argparse.Namespace) -> None:
    """One variant in this process: prints one JSON line of per-step seconds."""
    import torch

    sys.path.insert(0, str(HERE))
    from models import build

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build(args.model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    if args.compile:  # compiled in the warm-up; every variant watches the compiled module
        model = torch.compile(model)
    x = torch.randn(args.batch, 3, 64, 64)
    y = torch.randint(0, 10, (args.batch,))
    after_step = _attach(args, model, optimizer)

    def train_step(step: int) -> float:
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        after_step(step, loss)
        return time.perf_counter() - start

    # Warm-up: at least --warmup steps and --warmup-secs seconds, so that what a tool does once
    # per run (trickscope's server creating the run's series rows on the first statistics
    # flush, 5 s in; wandb's start-up) stays out of the timed steps.
    step, warm_until = 0, time.perf_counter() + args.warmup_secs
    while step < args.warmup or time.perf_counter() < warm_until:
        train_step(step)
        step += 1
    server_before = cpu_seconds(args.server_pid)
    times = [train_step(step + i) for i in range(args.steps)]
    server_after = cpu_seconds(args.server_pid)
    _detach(args)
    server_cpu = None
    if server_before is not None and server_after is not None:
        server_cpu = server_after - server_before  # its CPU time while the steps were timed
    print(json.dumps({"variant": args.variant, "times": times, "server_cpu": server_cpu}))


_finishers: list = []


def _attach(args: argparse.Namespace, model, optimizer):
    variant = args.variant
    if variant == "plain":
        return lambda step, loss: None
    if variant.startswith("trickscope"):
        import trickscope

        run = trickscope.init(project="bench", name=variant, url=args.url)
        cadence = {
            "trickscope_every1": {"every": 1, "hist_every": 0},
            "trickscope_every10": {"every": 10, "hist_every": 0},
            # Histograms alone at every step (scalars never due): their cost per due step.
            "trickscope_hist1": {"every": 10**9, "hist_every": 1},
        }.get(variant, {})
        run.watch(model, optimizer, **cadence)
        _finishers.append(run.finish)
        return lambda step, loss: run.log({"loss": loss.detach()}, step=step)
    if variant.startswith("wandb"):
        import wandb

        run = wandb.init(mode="offline", project="bench", dir=args.scratch, reinit=True)
        wandb.watch(model, log="all", log_freq=1 if variant.endswith("freq1") else 10)
        _finishers.append(run.finish)
        return lambda step, loss: run.log({"loss": loss.item()}, step=step)
    if variant == "tensorboard_scalars_hist":
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=args.scratch)
        _finishers.append(writer.close)
        named = list(model.named_parameters())

        def log(step: int, loss) -> None:
            writer.add_scalar("loss", loss.item(), step)
            for name, param in named:
                writer.add_scalar(f"grad_norm/{name}", param.grad.norm().item(), step)
                writer.add_scalar(f"weight_norm/{name}", param.norm().item(), step)
                writer.add_histogram(f"grad/{name}", param.grad, step)
                writer.add_histogram(f"weight/{name}", param, step)

        return log
    raise ValueError(f"unknown variant {variant!r}")


def _detach(args: argparse.Namespace) -> None:
    for finish in _finishers:
        finish()


def start_server(scratch: str) -> tuple[subprocess.Popen, str]:
    import socket
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    db = f"sqlite:///{scratch}/bench.db"
    process = subprocess.Popen(
        [sys.executable, "-m", "trickscope_cli", "serve", "--db", db, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/healthz", timeout=1)
            return process, url
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the trickscope server did not start")


def available(variant: str) -> bool:
    module = {"wandb": "wandb", "tensorboard": "tensorboard"}.get(variant.split("_")[0])
    if module is None:
        return True
    import importlib.util

    return importlib.util.find_spec(module) is not None


def driver(args: argparse.Namespace) -> None:
    variants = [v for v in args.variants if available(v) and v != "plain"]
    skipped = sorted(set(args.variants) - set(variants) - {"plain"})
    with tempfile.TemporaryDirectory() as scratch:
        server, url = start_server(scratch)
        env = {**os.environ, "WANDB_SILENT": "true", "WANDB_MODE": "offline"}

        def measure(variant: str, model: str) -> list[float]:
            """The variant's step times; the server's CPU time over them goes to ``server_cpu``."""
            command = [
                sys.executable, __file__, "--worker", "--variant", variant,
                "--model", model, "--steps", str(args.steps),
                "--warmup", str(args.warmup), "--warmup-secs", str(args.warmup_secs),
                "--batch", str(args.batch), "--server-pid", str(server.pid),
                "--threads", str(args.threads), "--url", url, "--scratch", scratch,
                *(["--compile"] if args.compile else []),
            ]  # fmt: skip
            out = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            if result["server_cpu"] is not None:
                server_cpu[variant].append(result["server_cpu"] / args.steps)
            return result["times"]

        try:
            for model in args.models:
                runs: dict[str, list[list[float]]] = {v: [] for v in ["plain", *variants]}
                server_cpu: dict[str, list[float]] = {v: [] for v in ["plain", *variants]}
                ratios: dict[str, list[float]] = {v: [] for v in variants}
                for round_index in range(args.rounds):
                    shift = round_index % max(len(variants), 1)
                    order = variants[shift:] + variants[:shift]
                    before = measure("plain", model)
                    runs["plain"].append(before)
                    for variant in order:
                        times = measure(variant, model)
                        after = measure("plain", model)
                        runs[variant].append(times)
                        runs["plain"].append(after)
                        base = (statistics.fmean(before) + statistics.fmean(after)) / 2
                        ratios[variant].append(statistics.fmean(times) / base)
                        before = after
                    print(f"# {model} round {round_index + 1} done", file=sys.stderr)
                report(model, args, runs, ratios, server_cpu)
        finally:
            server.terminate()
    if skipped:
        print(f"\nnot measured (peer not installed, pip install -e '.[bench]'): {skipped}")


def report(
    model: str,
    args: argparse.Namespace,
    runs: dict[str, list[list[float]]],
    ratios: dict[str, list[float]],
    server_cpu: dict[str, list[float]],
) -> None:
    """One table: per variant the median and mean step over all its processes, the overhead
    (the median over rounds of its mean step against the plain runs around it), and the
    trickscope server's CPU time per timed step (median over processes): it shares the
    training's cores, so it is part of what a variant costs there."""
    print(
        f"\n{model}, batch {args.batch}, 64x64, AdamW, {args.threads} threads, "
        f"{args.rounds} rounds x {args.steps} steps after >= {args.warmup} warm-up steps and "
        f">= {args.warmup_secs:g} s, "
        "fresh process per run, plain between every two variants\n"
    )
    print(
        "| variant | median step (ms) | mean step (ms) | overhead vs plain (median, range) "
        "| server CPU per step (ms) |"
    )
    print("|---|---:|---:|---:|---:|")
    overhead = {}
    for variant, processes in runs.items():
        steps = [t for times in processes for t in times]
        median = 1000 * statistics.median(steps)
        mean = 1000 * statistics.fmean(steps)
        cpu = server_cpu.get(variant)
        server = f"{1000 * statistics.median(cpu):.1f}" if cpu else "n/a"
        if variant == "plain":
            print(f"| plain | {median:.1f} | {mean:.1f} | | {server} |")
            continue
        per_round = [100 * (r - 1) for r in ratios[variant]]
        overhead[variant] = statistics.median(per_round)
        spread = f"{min(per_round):+.1f} … {max(per_round):+.1f}"
        print(
            f"| {variant} | {median:.1f} | {mean:.1f} | {overhead[variant]:+.1f} % ({spread}) "
            f"| {server} |"
        )
    if {"trickscope_every10", "trickscope_hist1"} <= overhead.keys():
        # The default cadence (every=10, hist_every=100) over a long run: the window above holds
        # no histogram step, so add a hundredth of the histograms' per-step cost.
        default = overhead["trickscope_every10"] + overhead["trickscope_hist1"] / 100
        print(f"| trickscope_default, histograms amortised (derived) | | | {default:+.1f} % | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet18", "vit_tiny"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5, help="warm-up steps, at the least")
    parser.add_argument(
        "--warmup-secs", type=float, default=6.0, help="warm-up seconds, at the least"
    )
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--compile", action="store_true", help="train a torch.compile'd model (inductor)"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    parser.add_argument("--server-pid", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
    else:
        print(
            f"machine: {platform.platform()}, {platform.processor() or 'cpu'}, "
            f"{os.cpu_count()} cores, Python {platform.python_version()}"
        )
        driver(args)


if __name__ == "__main__":
    main()
