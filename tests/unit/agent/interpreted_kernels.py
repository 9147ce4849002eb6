"""The fused row kernels, run by Triton's interpreter on CPU, against the torch formulation.

Not collected by the suite itself: ``test_row_kernels.py`` runs this file in a child pytest with
``TRITON_INTERPRET=1``, which Triton reads when it is imported. The interpreter executes the
kernels' own code, program by program, on host tensors; what it cannot show (speed, the code
generated for a GPU) is for ``bench/gpu_check.py`` and ``tests/gpu``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
from torch import Tensor, nn

from tests.kernel_checks import check_extreme_rows, check_moment_rows, check_update_rows
from tests.stats_reference import (
    assert_close,
    assert_grad_block,
    assert_weight_block,
    boundary_tensors,
    reference_grad,
    small_models,
    special_tensors,
    watched_reports,
)
from trickscope import _foreach, row_kernels, stats
from trickscope.segments import ROW

CPU = torch.device("cpu")

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy on NaN and ±Inf


@pytest.fixture(autouse=True)
def kernels(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The row formulation (CUDA's) on CPU, with the interpreted kernels in it."""
    monkeypatch.setattr(_foreach, "_segmented", lambda device: True)
    with row_kernels.interpreted():
        yield
        assert row_kernels.usable(torch.device("cpu")), "a kernel failed: torch ops took over"


@pytest.mark.parametrize("counts", [True, False])
def test_kernel_rows_equal_the_torch_rows(counts: bool) -> None:
    check_moment_rows(CPU, counts=counts)


def test_kernel_rows_are_exact_where_float32_squares_overflow_or_underflow() -> None:
    check_extreme_rows(CPU)


def test_update_rows_equal_the_torch_rows() -> None:
    check_update_rows(CPU)


def test_statistics_with_the_kernels_match_the_per_tensor_reference() -> None:
    xs = boundary_tensors()
    present = [x for x in xs if x.numel()]  # the reference's max() needs an element
    block = stats.grad_stats(present, stats.numels(present))
    for column, x in enumerate(present):
        assert_close(block[:, column].tolist(), reference_grad(x), f"tensor {column}")
    std = stats.grad_stats(xs, stats.numels(xs))[3, 1]
    assert math.isnan(std)  # the empty tensor's std, as Tensor.std says


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_every_statistic_matches_the_reference_on_several_models(dtype: torch.dtype) -> None:
    assert_grad_block(
        stats.grad_stats(special_tensors(dtype), stats.numels(special_tensors(dtype))),
        special_tensors(dtype),
    )
    for model in small_models():
        params = [p.to(dtype) for p in model.parameters()]
        grads: list[Tensor] = [p.grad.to(dtype) for p in model.parameters() if p.grad is not None]
        assert_grad_block(stats.grad_stats(grads, stats.numels(grads)), grads, f"{model} grad")
        block = stats.weight_stats(params, stats.numels(params))
        assert_weight_block(block, params, f"{model} weight")
        before = [(p.float() + 0.01).to(dtype) for p in params]
        snapshot = stats.Scratch(before)
        snapshot.load(before, fused=True)
        ratio = stats.update_ratio(params, snapshot).tolist()
        for r, a, b in zip(ratio, params, before, strict=True):
            want = torch.linalg.vector_norm(a.float() - b.float()) / torch.linalg.vector_norm(
                b.float()
            )
            assert r == pytest.approx(want.item(), rel=1e-4)


def watcher_reports(model: nn.Module, segmented: bool, monkeypatch: pytest.MonkeyPatch) -> list:
    """What a watcher with every statistic due reports over three AdamW steps."""
    monkeypatch.setattr(_foreach, "_segmented", lambda device: segmented)
    return watched_reports(model, (4, 3, 6, 6))


def conv_net(frozen: bool, channels_last: bool) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16, 1100), nn.Linear(1100, 3)
    )
    if frozen:  # a parameter without a gradient: weights and update take other layouts
        model[3].bias.requires_grad_(False)
    if channels_last:  # a non-contiguous weight: the group goes through the float32 buffer
        model[0].weight.data = model[0].weight.data.to(memory_format=torch.channels_last)
    return model


@pytest.mark.parametrize("frozen", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_the_watcher_with_the_kernels_reports_what_the_per_tensor_loop_reports(
    monkeypatch: pytest.MonkeyPatch, frozen: bool, channels_last: bool
) -> None:
    """End to end: gradients and weights read in place (or through the buffer), the update
    ratio from the snapshot, across the layouts that a frozen parameter makes."""
    loop = watcher_reports(conv_net(frozen, channels_last), False, monkeypatch)
    fused = watcher_reports(conv_net(frozen, channels_last), True, monkeypatch)
    assert len(fused) == 3
    for expected, got in zip(loop, fused, strict=True):
        assert got == pytest.approx(expected, rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("tensors", [1, 2, 3, 37])
def test_each_row_finds_its_tensor_by_searching_the_offsets(tensors: int) -> None:
    """The layout holds per-tensor offsets only: every row's program searches them for its
    tensor. Sizes around the row width, empty ones among them, for 1 to 37 tensors (searches
    of 1 to 6 halvings): every tensor's statistics and update ratio as the per-tensor loop's."""
    generator = torch.Generator().manual_seed(tensors)
    choices = [0, 1, 5, ROW - 1, ROW, ROW + 1, 3 * ROW + 7]
    picks = torch.randint(len(choices), (tensors,), generator=generator).tolist()
    sizes = [3 * ROW + 7] + [choices[i] for i in picks[1:]]
    xs = [torch.randn(size, generator=generator) for size in sizes]
    present = [x for x in xs if x.numel() > 1]
    assert_grad_block(stats.grad_stats(present, stats.numels(present)), present)
    assert_weight_block(stats.weight_stats(present, stats.numels(present)), present)
    rows = row_kernels.moment_rows(xs, stats.Scratch(xs).rows, counts=False)
    assert rows is not None
    sums = torch.stack([part.double().sum() for x in xs for part in (x.split(ROW) or [x])])
    torch.testing.assert_close(rows[:, 1], sums)
    before = [x + 0.5 for x in xs]
    snapshot = stats.Scratch(before)
    snapshot.load(before, fused=True)
    ratio = stats.update_ratio(xs, snapshot)
    want = torch.stack([(b - a).norm() / b.norm() for a, b in zip(xs, before, strict=True)])
    torch.testing.assert_close(ratio, want, equal_nan=True, rtol=1e-5, atol=0)
