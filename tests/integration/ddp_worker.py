"""One rank of a real ``torch.distributed`` (gloo, CPU) training job that reports to trickscope.

``test_distributed.py`` starts one process per rank with ``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT`` set, as ``torchrun`` would. The fault to plant is chosen on
the command line; the script prints ``{"rank": r, "run_id": id}`` as its last line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import trickscope
from trickscope import tricks

STEPS = 12
DRIFT_AFTER = 5  # the step after which rank 1 nudges its own weights


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fault", choices=["none", "slow-input", "drift", "no-sync"])
    parser.add_argument("--slow-rank", type=int, default=-1)
    args = parser.parse_args()

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(rank)  # each rank its own data; DDP broadcasts rank 0's initial weights
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    ddp = DistributedDataParallel(model)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
    run = trickscope.init(project="ddp", config={"fault": args.fault}, flush_secs=0.1)
    run.watch(ddp, optimizer, every=1, hist_every=4)
    for step in range(STEPS):
        if args.fault == "slow-input" and rank == args.slow_rank:
            time.sleep(0.08)  # a data loader that cannot keep up, on this rank only
        x, y = torch.randn(16, 8), torch.randint(0, 2, (16,))
        # The fault "no-sync": every backward under no_sync(), so no all-reduce ever runs.
        sync = ddp.no_sync() if args.fault == "no-sync" else contextlib.nullcontext()
        with sync:
            loss = F.cross_entropy(ddp(x), y)
            loss.backward()
        tricks.clip_grad_norm(ddp.parameters(), 10.0, run=run, step=step)  # reported by rank 0
        optimizer.step()
        optimizer.zero_grad()
        if args.fault == "drift" and rank == 1 and step == DRIFT_AFTER:
            with torch.no_grad():  # an update DDP never sees: the replicas part ways
                model[0].weight.add_(0.01)
        run.log({"loss/train": loss})
    run.finish()
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.write(json.dumps({"rank": rank, "run_id": run.id}) + "\n")


if __name__ == "__main__":
    main()
