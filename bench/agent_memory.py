"""Host memory that ``watch`` adds to a training process on CPU, at its defaults and with every
statistic and histogram at every step.

    python bench/agent_memory.py [--layers 24 --width 2048] [--steps 3] [--agent PATH]

The model is ``--layers`` × ``Linear(width, width)`` (24 × 2048²: 100M parameters, 384 MB of
float32). Each variant runs in a fresh process: a few plain AdamW steps first (the optimizer's
state exists before the agent comes), then the resident set size (RSS) is read and its peak
reset (``/proc/self/clear_refs``), ``trickscope.init(offline=True)`` and ``watch`` attach, and
``--steps`` steps run (the first is due at both cadences: scalars and histograms). Reported per
variant: the RSS added at the end and the peak RSS added during the watched steps, against the
same process before ``watch``, and those figures less the ``plain`` row's (the same steps
without ``watch``: what training alone adds), which is the agent's share. ``--agent PATH``
imports the agent from another checkout's ``agent`` folder (``git archive <commit> agent |
tar -x -C /tmp/old``, then ``--agent /tmp/old/agent``) to compare with an earlier version. The
workers run with glibc's mmap threshold fixed at 1 MiB (``MALLOC_MMAP_THRESHOLD_``), so that a
freed block goes back to the system and the RSS follows what is allocated. Linux only.

    python bench/agent_memory.py --layouts [--agent PATH]

measures instead what the row layouts hold for the life of a run, at sizes no CPU run reaches:
the layouts that ``watch`` builds for the row kernels (blocks of ``IN_PLACE_BLOCK_ELEMENTS``) of
the 100M-parameter model and of Llama-2-7B's shapes (sizes only: no model is built), with every
tensor a layout keeps counted, as bytes and as a share of the parameters' float32 and bf16 bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

VARIANTS = {
    "plain": None,
    "defaults": {},
    "everything_every_step": {"every": 1, "hist_every": 1},
}


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def worker(args: argparse.Namespace) -> None:
    """One variant in this process: prints one JSON line of MiB figures."""
    if args.agent:
        sys.path.insert(0, args.agent)
    import torch
    from torch import nn

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = nn.Sequential(*(nn.Linear(args.width, args.width) for _ in range(args.layers)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(args.batch, args.width)

    def step() -> None:
        loss = model(x).square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(2):
        step()
    import trickscope  # imported before the baseline: its modules are not the agent's buffers

    cadence = VARIANTS[args.worker]
    with tempfile.TemporaryDirectory() as journal:
        run = trickscope.init(project="memory", offline=True, journal_dir=journal, quiet=True)
        before = _status_kib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) starts again from now
        if cadence is not None:
            run.watch(model, optimizer, **cadence)
        for _ in range(args.steps):
            step()
        after, peak = _status_kib("VmRSS"), _status_kib("VmHWM")
        run.finish(timeout=5.0)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    print(
        json.dumps(
            {
                "param_mib": params / 2**20,
                "added_mib": (after - before) / 1024,
                "peak_added_mib": (peak - before) / 1024,
            }
        )
    )


def llama_7b_sizes() -> list[int]:
    """Llama-2-7B's parameter sizes: embeddings, 32 layers, the norm and the output layer."""
    width, hidden, vocab = 4096, 11008, 32000
    layer = [width * width] * 4 + [width * hidden] * 3 + [width] * 2
    return [vocab * width, *layer * 32, width, vocab * width]


def layouts_worker(args: argparse.Namespace) -> None:
    """Bytes the row layouts of two models keep: prints one JSON line per model."""
    if args.agent:
        sys.path.insert(0, args.agent)
    import torch

    from trickscope import segments, watch

    models = {
        f"{args.layers} x Linear({args.width}, {args.width})": [
            args.width * args.width,
            args.width,
        ]
        * args.layers,
        "Llama-2-7B shapes": llama_7b_sizes(),
    }
    for name, sizes in models.items():
        members = list(range(len(sizes)))
        held: dict[int, int] = {}
        kept = []  # alive together, as a watcher keeps them: no address is reused
        for block in watch._blocks(members, sizes, watch.IN_PLACE_BLOCK_ELEMENTS):
            rows = segments.RowLayout([sizes[i] for i in block], torch.device("cpu"))
            rows.sum(torch.zeros(rows.elements // segments.ROW, 3))  # as the statistics use it
            kept.append(rows)
            for value in vars(rows).values():
                tensors = value.values() if isinstance(value, dict) else [value]
                for tensor in tensors:
                    if isinstance(tensor, torch.Tensor):
                        held[tensor.data_ptr()] = tensor.numel() * tensor.element_size()
        params = sum(sizes)
        print(json.dumps({"model": name, "params": params, "layout_bytes": sum(held.values())}))


def layouts_main(args: argparse.Namespace) -> int:
    command = [sys.executable, __file__, "--worker", "layouts", "--agent", args.agent]
    command += ["--layers", str(args.layers), "--width", str(args.width)]
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        print(out.stderr, file=sys.stderr)
        return 1
    print(f"agent: {args.agent or 'this checkout'}; one layout (a watcher keeps one per list of")
    print("shapes: the gradients' and the weights', the same list when every parameter has one)")
    print("| model | parameters | layout bytes | % of float32 bytes | % of bf16 bytes |")
    print("|---|---:|---:|---:|---:|")
    for line in out.stdout.strip().splitlines():
        row = json.loads(line)
        params, held = row["params"], row["layout_bytes"]
        print(
            f"| {row['model']} | {params / 1e9:.2f}B | {held:,} | "
            f"{100 * held / (4 * params):.3f} | {100 * held / (2 * params):.3f} |"
        )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="watched steps (step 0 is due)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--agent", default="", help="import the agent from this folder")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--layouts", action="store_true", help="the row layouts' bytes instead")
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "layouts":
        layouts_worker(args)
        return 0
    if args.worker:
        worker(args)
        return 0
    if args.layouts:
        return layouts_main(args)
    rows = []
    for variant in args.variants:
        command = [sys.executable, __file__, "--worker", variant]
        for flag in ("layers", "width", "batch", "steps", "threads", "agent"):
            command += [f"--{flag}", str(getattr(args, flag))]
        # glibc's malloc otherwise raises its mmap threshold (up to 32 MiB) as blocks are
        # freed, and keeps later blocks of that size in its heap after they are freed: the RSS
        # would then count memory that neither training nor the agent holds any more.
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
        out = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
        if out.returncode != 0:
            print(out.stderr, file=sys.stderr)
            return 1
        rows.append((variant, json.loads(out.stdout.strip().splitlines()[-1])))
    param_mib = rows[0][1]["param_mib"]
    budget = 0.01 * param_mib + 64
    print(f"model: {args.layers} x Linear({args.width}, {args.width}), {param_mib:.0f} MiB float32")
    print(f"agent: {args.agent or 'this checkout'}; target ≤ {budget:.0f} MiB added")
    plain = dict(rows).get("plain", {"added_mib": 0.0, "peak_added_mib": 0.0})
    print(
        "| variant | RSS added at the end (MiB) | peak RSS added (MiB) | "
        "over plain: end | over plain: peak |"
    )
    print("|---|---:|---:|---:|---:|")
    for variant, result in rows:
        end, peak = result["added_mib"], result["peak_added_mib"]
        print(
            f"| {variant} | {end:.0f} | {peak:.0f} | {end - plain['added_mib']:.0f} | "
            f"{peak - plain['peak_added_mib']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
