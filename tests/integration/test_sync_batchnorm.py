"""A SyncBatchNorm's statistics pool every rank of its process group: the BatchNorm probe counts
them all, in a real two-process gloo job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import free_port, rank_env

WORKER = Path(__file__).with_name("sync_batchnorm_worker.py")


def test_sync_batchnorm_counts_the_samples_of_every_rank() -> None:
    port = str(free_port())
    processes = [
        subprocess.Popen(
            [sys.executable, str(WORKER)],
            env={**os.environ, **rank_env(rank, 2, port)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    for rank, process in enumerate(processes):
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, f"rank {rank} failed:\n{err[-4000:]}"
        reported = json.loads(out.strip().splitlines()[-1])
        assert reported == {"rank": rank, "plain": ["2", 3], "pooled": ["1", 6]}
