"""The FSDP2 row of bench/gpu_check.py: a two-rank job, one GPU per rank (NCCL).

    python -m torch.distributed.run --nproc-per-node 2 bench/_gpu_fsdp.py [--steps 40]

A Llama-shaped transformer (16 layers of width 1024, bf16) with ``fully_shard`` on each layer
and on the root; every rank calls ``trickscope.init`` and ``watch``. Plain steps, the default
cadence and every statistic at every step alternate in blocks; rank 0 prints one table row
of bench/gpu_check.py's format (host syncs and memory are the single-GPU rows' columns).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch
import torch.distributed as dist


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    from torch.distributed.fsdp import fully_shard
    from transformers import LlamaConfig, LlamaForCausalLM

    import trickscope

    rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl")
    device = torch.device("cuda", rank)
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=1024, intermediate_size=2816, num_hidden_layers=16, num_attention_heads=16,
        num_key_value_heads=4, vocab_size=32000,
    )  # fmt: skip
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    with torch.device(device):
        model = LlamaForCausalLM(config)
    torch.set_default_dtype(default)
    for layer in model.model.layers:
        fully_shard(layer)
    fully_shard(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    tokens = torch.randint(0, config.vocab_size, (4, 512), device=device)
    journal = tempfile.mkdtemp()
    run = trickscope.init(project="gpu-check-fsdp", offline=True, journal_dir=journal, quiet=True)

    def step() -> None:
        loss = model(input_ids=tokens, labels=tokens).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def timed(count: int) -> list[float]:
        out = []
        for _ in range(count):
            torch.cuda.synchronize(device)
            start = time.perf_counter()
            step()
            torch.cuda.synchronize(device)
            out.append(time.perf_counter() - start)
        return out

    for _ in range(3):
        step()
    times: dict[str, list[float]] = {"plain": [], "default": [], "every1": []}
    block = max(args.steps // 4, 2)
    for _ in range(4):
        run._close_hooks()
        times["plain"] += timed(block)
        for label, cadence in (("default", {}), ("every1", {"every": 1, "hist_every": 0})):
            run._close_hooks()
            run.watch(model, optimizer, **cadence)
            step()
            times[label] += timed(block)
    run.finish(timeout=10.0)
    base = statistics.median(times["plain"])
    pct = {k: 100 * (statistics.median(v) / base - 1) for k, v in times.items()}
    errors = run.incidents.errors
    if rank == 0:
        params = sum(p.numel() for p in model.parameters()) * 2 / 2**20  # bf16, global sizes
        print(
            f"| fsdp2 x2 | {params:.0f} | {1000 * base:.1f} | {pct['default']:+.1f} % | | "
            f"{pct['every1']:+.1f} % | | | | | | | "
            f"{'none' if errors == 0 else dict(run.incidents.by_kind)} |",
            flush=True,
        )
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
