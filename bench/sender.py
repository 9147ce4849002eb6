"""The sender thread's CPU time per due step: what it takes from a training loop it shares the
GIL with.

    python bench/sender.py [--steps 600]

A GPU training loop is often bound by its own Python and kernel launches; the sender thread's
Python work then delays it one for one. This submits the samples a watched model produces with
every statistic due at every step (the key counts of ResNet-50 and ViT-B/16: 11 per parameter
tensor, plus the total norm), the way the hooks do, and reads the sender thread's own CPU clock:
waiting on the sample, buffering it, building and encoding batches, and (offline, so that no
server's work is counted) writing them to the journal. There is no peer to run side by side: a
run at an older commit gives the before.
"""

from __future__ import annotations

import argparse
import logging
import platform
import statistics
import sys
import tempfile
import time

import torch

from trickscope._incidents import Incidents
from trickscope.config import AgentConfig
from trickscope.sender import Sample, Sender
from trickscope.transfer import Parcel

MODELS = {"resnet50": 161, "vit_b_16": 152}  # parameter tensors
STATS_PER_TENSOR = 11  # 7 gradient, 3 weight, the update ratio


def sender_cpu_per_step(tensors: int, steps: int) -> float:
    """Milliseconds of the sender thread's CPU per due step."""
    keys = [f"stat{index % STATS_PER_TENSOR}/layer{index}" for index in range(tensors * 11)]
    keys.append("grad_norm/total")
    with tempfile.TemporaryDirectory() as journal:
        config = AgentConfig.from_env(offline=True, journal_dir=journal, queue_size=4 * steps)
        samples = [torch.randn(len(keys)) for _ in range(steps)]
        # The sender thread's CPU: the process's, less this thread's (nothing else runs).
        start = time.process_time() - time.thread_time()
        sender = Sender(config, "bench", Incidents())
        for step, values in enumerate(samples):
            # What the hooks hand over: a fresh float32 vector on the host (a CPU run; on CUDA
            # the sender copies it out of a pinned buffer first).
            sender.submit(Sample(step, time.time(), keys, Parcel(values), bulk=True))
        sender.close(timeout=60.0)  # the last flush and journal write included
        used = time.process_time() - time.thread_time() - start
    return 1000 * used / steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.getLogger("trickscope").setLevel(logging.ERROR)  # "the journal holds data": by design
    machine = platform.processor() or "cpu"
    print(f"machine: {platform.platform()}, {machine}, torch {torch.__version__}")
    print("| model | values per due step | sender CPU per due step (median of runs) |")
    print("|---|---:|---:|")
    for name, tensors in MODELS.items():
        runs = [sender_cpu_per_step(tensors, args.steps) for _ in range(args.repeats)]
        print(f"| {name} | {tensors * STATS_PER_TENSOR + 1} | {statistics.median(runs):.3f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
