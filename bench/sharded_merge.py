"""The merge of sharded statistics: bytes and time per due step of the collective, on CPU with
gloo, and what sending each rank's partials to the server would cost instead.

    OMP_NUM_THREADS=1 python bench/sharded_merge.py [--ranks 2] [--layers 75] [--steps 40]

Each rank trains a ``layers``-layer MLP (``Linear(256, 256)``: ``2 × layers`` parameter tensors)
under ``fully_shard`` with ``watch``'s statistics due at every step, and times, per due step,
the watcher's whole post-step work and, inside it, the merge: the ``gather`` to rank 0 and its
merge, after a barrier so that the wait for a slower rank is not counted (wall clock and the
thread's CPU clock, medians after a warm-up). The bytes are the table's: ``COLUMNS`` float64 per
parameter tensor from each rank.
The server alternative is priced from its payload: each rank's partials as series points.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.distributed.fsdp import fully_shard

from trickscope import shard_merge
from trickscope._incidents import Incidents
from trickscope.sharded import ShardedWatcher
from trickscope.watch import Watcher

# Partials a rank would send per parameter tensor for the server to merge: n, Σx², Σx, M2,
# zeros, NaN, ±Inf and max |x| of the gradient; n, Σx², Σx, M2 of the weight; ‖Δ‖², ‖w‖².
SERVER_PARTIALS = 14


def rank_main(rank: int, ranks: int, port: int, layers: int, steps: int, out: Any) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=ranks)
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(256, 256) for _ in range(layers)])
    for layer in model:
        fully_shard(layer)
    fully_shard(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    watcher = Watcher(model, optimizer, every=1, start_step=0, emit=lambda *a: None,
                      incidents=Incidents())  # fmt: skip
    assert isinstance(watcher, ShardedWatcher)
    merge_wall: list[float] = []
    merge_cpu: list[float] = []
    post_wall: list[float] = []
    gather, post = watcher._gather, watcher._post

    def timed_gather(table: Any) -> Any:
        # The ranks line up first: what is left is the collective and the merge, not the wait
        # for a rank still computing its statistics.
        dist.barrier()
        wall, cpu = time.perf_counter(), time.thread_time()
        merged = gather(table)
        merge_wall.append(time.perf_counter() - wall)
        merge_cpu.append(time.thread_time() - cpu)
        return merged

    def timed_post(*args: Any) -> None:
        wall = time.perf_counter()
        post(*args)
        post_wall.append(time.perf_counter() - wall)

    watcher._gather = timed_gather  # type: ignore[method-assign]
    optimizer._optimizer_step_post_hooks.clear()
    optimizer.register_step_post_hook(timed_post)
    x = torch.randn(32, 256)
    for _ in range(steps):
        model(x).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    warm = steps // 4
    if rank == 0:
        tensors = 2 * layers
        out.put(
            {
                "tensors": tensors,
                "merge_ms": statistics.median(merge_wall[warm:]) * 1e3,
                "merge_cpu_ms": statistics.median(merge_cpu[warm:]) * 1e3,
                "post_ms": statistics.median(post_wall[warm:]) * 1e3,
                "sent_bytes": tensors * shard_merge.COLUMNS * 8,
                "received_bytes": (ranks - 1) * tensors * shard_merge.COLUMNS * 8,
                "server_points": ranks * tensors * SERVER_PARTIALS,
            }
        )
    watcher.close()
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--layers", type=int, default=75)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    context = mp.get_context("spawn")
    out = context.SimpleQueue()
    port = 29000 + os.getpid() % 1000
    mp.start_processes(rank_main, args=(args.ranks, port, args.layers, args.steps, out),
                       nprocs=args.ranks, start_method="spawn")  # fmt: skip
    result = out.get()
    print(f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, gloo, "
          f"{args.ranks} ranks, {result['tensors']} parameter tensors")  # fmt: skip
    print("| path | bytes per due step | time per due step |")
    print("|---|---:|---:|")
    print(
        f"| gather to rank 0 (sharded watcher) | {result['sent_bytes']:,} B sent a rank, "
        f"{result['received_bytes']:,} B received by rank 0 | merge {result['merge_ms']:.2f} ms "
        f"wall, {result['merge_cpu_ms']:.2f} ms CPU, of {result['post_ms']:.2f} ms post-step |"
    )
    print(
        f"| partials to the server | {result['server_points']:,} points "
        f"({args.ranks} × {result['tensors']} × {SERVER_PARTIALS}) | see the ingest table |"
    )


if __name__ == "__main__":
    main()
