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
from torch import Tensor

from tests.kernel_checks import check_extreme_rows, check_moment_rows, check_update_rows
from tests.stats_reference import (
    assert_close,
    assert_grad_block,
    assert_weight_block,
    boundary_tensors,
    reference_grad,
    small_models,
    special_tensors,
)
from trickscope import _foreach, row_kernels, stats

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
