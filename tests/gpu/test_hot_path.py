"""The agent's hot path on a real CUDA device: no host syncs, pinned buffers, exact statistics.

Skipped without CUDA. ``set_sync_debug_mode`` is experimental and misses copies into pageable
memory, hence the separate check that every host buffer is pinned.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import trickscope
from tests.kernel_checks import check_extreme_rows, check_moment_rows, check_update_rows
from tests.stats_reference import (
    assert_grad_block,
    assert_histograms,
    assert_weight_block,
    small_models,
    special_tensors,
)
from trickscope import row_kernels, stats
from trickscope.config import AgentConfig
from trickscope.distributed import Rank
from trickscope.run import Run

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.timeout(300),
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3)
        self.bn = nn.BatchNorm2d(16)
        self.head = nn.Linear(16 * 14 * 14, 10)
        self.unused = nn.Parameter(torch.zeros(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.bn(self.conv(x))).flatten(1))


@pytest.mark.parametrize("rank", [None, 0, 1])
def test_hot_path_makes_no_host_sync_and_uses_pinned_buffers(
    tmp_path: Path, rank: int | None
) -> None:
    """Single-process, and as rank 0 and rank 1 of a job (the per-rank summary's hooks too)."""
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = Net().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(8, 3, 16, 16, device=device)
    y = torch.randint(0, 10, (8,), device=device)
    if rank is None:
        run = trickscope.init(project="gpu", offline=True, journal_dir=tmp_path)
    else:
        agent = AgentConfig.from_env({}, offline=True, journal_dir=tmp_path)
        run = Run(project="gpu", name=None, config=None, tags=None, agent=agent,
                  rank=Rank(rank, 2, "nccl"), run_id="f" * 32)  # fmt: skip
    run.watch(model, optimizer, every=1, hist_every=1)  # every statistic and histogram due

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        run.log({"loss/train": loss.detach()})

    step()  # the first due step builds the layout and pins its buffers
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "a prototype feature", said when the mode is set
        torch.cuda.set_sync_debug_mode("error")
    try:
        # A sync raises: in the test's own code it fails the test, in a hook the agent counts it
        # as an incident (checked below).
        for _ in range(20):
            step()
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    buffers = [buffer for slot in run._handoff._buffers for buffer in slot.values()]
    assert buffers and all(buffer.is_pinned() for buffer in buffers)
    run.finish(timeout=10.0)
    assert run.incidents.errors == 0, run.incidents.by_kind


def test_amp_scale_is_reported_without_a_sync(tmp_path: Path) -> None:
    model = Net().cuda()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cuda")
    x, y = torch.randn(8, 3, 16, 16, device="cuda"), torch.randint(0, 10, (8,), device="cuda")
    run = trickscope.init(project="gpu", offline=True, journal_dir=tmp_path)
    run.watch(model, optimizer, every=1, hist_every=1, scaler=scaler)
    for _ in range(5):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.float16):
            loss = nn.functional.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)  # the scaler itself reads found_inf back; the hooks do not
        scaler.update()
    run.finish(timeout=10.0)
    assert run.incidents.errors == 0, run.incidents.by_kind


def test_cuda_statistics_match_the_cpu_reference() -> None:
    torch.manual_seed(0)
    model = Net()
    model(torch.randn(4, 3, 16, 16)).pow(2).mean().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    on_cpu = stats.grad_stats(grads, stats.numels(grads), fused=False)
    cuda = [g.cuda() for g in grads]
    on_gpu = stats.grad_stats(cuda, stats.numels(cuda)).cpu()
    torch.testing.assert_close(on_gpu, on_cpu, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(stats.histograms(cuda).cpu(), stats.histograms(grads))


CUDA = torch.device("cuda")
# Where Triton is installed the fused row kernels must run, not fall back.
KERNELS = [True, False] if importlib.util.find_spec("triton") else [False]


@pytest.mark.parametrize("kernels", KERNELS, ids=lambda on: "row-kernels" if on else "torch-ops")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_every_cuda_statistic_matches_the_per_parameter_reference(
    dtype: torch.dtype, kernels: bool
) -> None:
    """The real CUDA kernels (the fused row kernels or the torch ops: segmented reductions,
    fused norms) against plain expressions, on several models' tensors and on tensors holding
    NaN, ±Inf, zeros and constants."""
    with row_kernels.use_kernels(kernels):
        check_every_statistic(dtype)
        assert row_kernels.usable(CUDA) == kernels, "a row kernel failed: see the warning"


@pytest.mark.skipif(not importlib.util.find_spec("triton"), reason="needs Triton")
def test_the_row_kernels_equal_the_torch_ops_on_cuda() -> None:
    for counts in (True, False):
        check_moment_rows(CUDA, counts=counts)
    check_extreme_rows(CUDA)
    check_update_rows(CUDA)
    assert row_kernels.usable(CUDA), "a row kernel failed: see the warning"


def check_every_statistic(dtype: torch.dtype) -> None:
    tensor_sets = []
    for model in small_models():
        params = list(model.parameters())
        tensor_sets.append(
            ([p.detach() for p in params], [p.grad for p in params if p.grad is not None])
        )
    specials = special_tensors(torch.float32)
    tensor_sets.append(([t for t in specials if t.isfinite().all()], specials))
    for weights, grads in tensor_sets:
        weights = [w.to("cuda", dtype) for w in weights]
        grads = [g.to("cuda", dtype) for g in grads]
        block = stats.grad_stats(grads, stats.numels(grads), scratch=stats.Scratch(grads))
        assert_grad_block(block.cpu(), grads)
        block = stats.weight_stats(weights, stats.numels(weights), scratch=stats.Scratch(weights))
        assert_weight_block(block.cpu(), weights)
        before = [w + 0.01 for w in weights]
        snapshot = stats.Scratch(before)
        snapshot.load(before, fused=True)
        ratios = stats.update_ratio(weights, snapshot).cpu().tolist()
        for ratio, w, b in zip(ratios, weights, before, strict=True):
            w, b = w.cpu().float(), b.cpu().float()
            expected = (torch.linalg.vector_norm(w - b) / torch.linalg.vector_norm(b)).item()
            assert ratio == pytest.approx(expected, rel=1e-3)
        assert_histograms(stats.histograms(grads, 32), grads, 32)
