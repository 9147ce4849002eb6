"""One rank of a two-process gloo job: the BatchNorm probe on a SyncBatchNorm that pools both
ranks' samples. Prints what the probe took as JSON."""

from __future__ import annotations

import contextlib
import json
import sys

import torch
import torch.distributed as dist
from torch import nn

from trickscope._incidents import Incidents
from trickscope.probes import batchnorm


def main() -> None:
    dist.init_process_group("gloo")
    model = nn.Sequential(nn.Linear(4, 4), nn.SyncBatchNorm(4), nn.BatchNorm1d(4))
    probe = batchnorm.BatchNormProbe(batchnorm.find(model), Incidents())
    probe.armed = True
    x = torch.randn(3, 4)
    model[2](x)  # a plain BatchNorm: this rank's 3 samples
    plain = probe.take()
    # The pre-hook runs first; on CPU SyncBatchNorm then refuses to sync (it needs a GPU).
    with contextlib.suppress(ValueError):
        model[1](x)
    pooled = probe.take()
    sys.stdout.write(json.dumps({"rank": dist.get_rank(), "plain": plain, "pooled": pooled}) + "\n")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
