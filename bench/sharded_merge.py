"""The merge of sharded statistics: bytes and time per due step of the collective, on CPU with
gloo, and what sending each rank's partials to the server would cost instead.

    OMP_NUM_THREADS=1 python bench/sharded_merge.py [--ranks 2] [--layers 75] [--steps 40]
        [--merge gather reduce]

Each rank trains a ``layers``-layer MLP (``Linear(256, 256)``: ``2 × layers`` parameter tensors)
under ``fully_shard`` with ``watch``'s statistics due at every step, and times, per due step,
the watcher's whole post-step work and, inside it, the merge: the ``gather`` to rank 0 and its
merge, after a barrier so that the wait for a slower rank is not counted (wall clock and the
thread's CPU clock, medians after a warm-up). The bytes are the table's: ``COLUMNS`` float64 per
parameter tensor from each rank.
The server alternative is priced from its payload: each rank's partials as series points.
``--merge`` names the transports to time, side by side in the same job: ``gather`` (every
rank's table to rank 0) and ``reduce`` (an all-reduce of ``SUMS`` partial sums per tensor, then
a sum and a max reduction to rank 0 of 2 and 1 values per tensor: sizes that do not grow with
the ranks).
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

from trickscope import shard_merge, sharded
from trickscope._incidents import Incidents
from trickscope.sharded import ShardedWatcher
from trickscope.watch import Watcher

# Partials a rank would send per parameter tensor for the server to merge: n, Σx², Σx, M2,
# zeros, NaN, ±Inf and max |x| of the gradient; n, Σx², Σx, M2 of the weight; ‖Δ‖², ‖w‖².
SERVER_PARTIALS = 14


def rank_main(
    rank: int, ranks: int, port: int, layers: int, steps: int, merges: list[str], out: Any
) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=ranks)
    for merge in merges:
        sharded.REDUCE_FROM_RANKS = 1 if merge == "reduce" else 1 << 30
        result = time_merge(rank, ranks, layers, steps)
        if rank == 0:
            out.put({"merge": merge, **result})
    dist.destroy_process_group()


def time_merge(rank: int, ranks: int, layers: int, steps: int) -> dict[str, Any]:
    """Per due step, medians of the merge's and the post-step work's times on this rank."""
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
    watcher.close()
    tensors = 2 * layers
    return {
        "tensors": tensors,
        "merge_ms": statistics.median(merge_wall[warm:]) * 1e3,
        "merge_cpu_ms": statistics.median(merge_cpu[warm:]) * 1e3,
        "post_ms": statistics.median(post_wall[warm:]) * 1e3,
        "server_points": ranks * tensors * SERVER_PARTIALS,
    }


def payload(merge: str, ranks: int, tensors: int) -> str:
    """What one due step's merge moves, as the collectives' tensor sizes."""
    table = tensors * shard_merge.COLUMNS * 8
    if merge == "gather":
        return f"{table:,} B sent a rank, {(ranks - 1) * table:,} B received by rank 0"
    sums, rest = tensors * shard_merge.SUMS * 8, tensors * 3 * 8
    return f"all-reduce of {sums:,} B, reductions of {rest:,} B to rank 0 (any number of ranks)"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--layers", type=int, default=75)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--merge", nargs="+", default=["gather", "reduce"],
                        choices=["gather", "reduce"])  # fmt: skip
    args = parser.parse_args()
    context = mp.get_context("spawn")
    out = context.SimpleQueue()
    port = 29000 + os.getpid() % 1000
    mp.start_processes(rank_main, args=(args.ranks, port, args.layers, args.steps, args.merge, out),
                       nprocs=args.ranks, start_method="spawn")  # fmt: skip
    results = [out.get() for _ in args.merge]
    tensors = results[0]["tensors"]
    print(f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, gloo, "
          f"{args.ranks} ranks, {tensors} parameter tensors")  # fmt: skip
    print("| path | bytes per due step | time per due step |")
    print("|---|---:|---:|")
    for result in results:
        print(
            f"| {result['merge']} (sharded watcher) | "
            f"{payload(result['merge'], args.ranks, tensors)} | merge {result['merge_ms']:.2f} ms "
            f"wall, {result['merge_cpu_ms']:.2f} ms CPU, of {result['post_ms']:.2f} ms post-step |"
        )
    print(
        f"| partials to the server | {results[0]['server_points']:,} points "
        f"({args.ranks} × {tensors} × {SERVER_PARTIALS}) | see the ingest table |"
    )


if __name__ == "__main__":
    main()
