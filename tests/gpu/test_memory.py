"""The agent's CUDA memory stays bounded, and its newer device paths (the sampled update ratio,
the count of GradScaler skips) make no host sync. Skipped without CUDA."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import trickscope
from trickscope.update_sample import UpdateSample

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.timeout(300),
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]
MIB = 2**20


def _peak_added(work: object) -> int:
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    work()  # type: ignore[operator]
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_every_statistic_at_every_step_stays_within_one_percent_plus_64_mib(
    tmp_path: Path, dtype: torch.dtype
) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(*(nn.Linear(4096, 4096) for _ in range(16))).cuda().to(dtype)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(16, 4096, device="cuda", dtype=dtype)

    def steps() -> None:
        for _ in range(3):
            loss = model(x).float().square().mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    steps()  # the optimizer's state exists before the agent comes
    plain = _peak_added(steps)
    run = trickscope.init(project="gpu", offline=True, journal_dir=tmp_path, quiet=True)
    run.watch(model, optimizer, every=1, hist_every=1)
    watched = _peak_added(steps)
    run.finish(timeout=10.0)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    assert run.incidents.errors == 0, run.incidents.by_kind
    assert watched - plain <= 0.01 * params + 64 * MIB, (watched - plain) / MIB


def test_sampled_update_ratio_and_skip_count_make_no_host_sync(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)).cuda()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0**20)
    x = torch.randn(8, 256, device="cuda")
    run = trickscope.init(project="gpu", offline=True, journal_dir=tmp_path, quiet=True)
    run.watch(model, optimizer, every=1, hist_every=0, scaler=scaler)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.float16):
            loss = model(x).float().square().mean()
        scaler.scale(loss).backward()
        scaler.step(optimizer)  # the scaler itself reads found_inf back; the hooks do not
        scaler.update()

    step()
    torch.cuda.synchronize()
    sample = UpdateSample([p for p in model.parameters()])
    previous = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.cuda.set_sync_debug_mode("error")
    try:
        sample.snapshot(list(model.parameters()))
        sample.ratio(list(model.parameters()))
        for _ in range(3):
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.float16):
                loss = model(x).float().square().mean()
            scaled = scaler.scale(loss)
            scaled.backward()
            # What GradScaler.step does, less its own read of found_inf.
            scaler.unscale_(optimizer)
            optimizer.step()
            scaler.update()
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    run.finish(timeout=10.0)
    assert run.incidents.errors == 0, run.incidents.by_kind
