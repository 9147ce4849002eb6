"""Tensors larger than the scratch buffer: their statistics read a chunk at a time, and a
bounded buffer whatever must be loaded (half precision and non-finite values on CPU, the torch
ops of the row formulation)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from tests.stats_reference import assert_grad_block, assert_weight_block, special_tensors
from trickscope import _foreach, row_kernels, stats, streamed
from trickscope.segments import ROW


def large_tensors(dtype: torch.dtype) -> list[Tensor]:
    """Tensors of several chunks: NaN and ±Inf in one, zeros, a mean that dominates the
    spread, a channels-last weight (not contiguous), transposed views."""
    generator = torch.Generator().manual_seed(5)
    specials = torch.randn(9000, generator=generator)
    specials[10], specials[4000], specials[8999] = math.nan, math.inf, -math.inf
    specials[100:600] = 0.0
    conv = torch.randn(16, 8, 5, 5, generator=generator)
    return [
        t.to(dtype)
        for t in (
            specials,
            1.0 + 1e-3 * torch.randn(7001, generator=generator),
            torch.zeros(3000),
            conv.to(memory_format=torch.channels_last),
            torch.randn(70, 90, generator=generator).T,
            torch.randn(5000, 2, generator=generator).T,  # each slice larger than the buffer
            torch.randn(5000, generator=generator) * 1e-3,
        )
    ]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_chunked_statistics_of_one_tensor_equal_the_reference(dtype: torch.dtype) -> None:
    tensors = large_tensors(dtype) + special_tensors(dtype)
    grads = torch.stack([streamed.moments(t, counts=True, chunk=1000) for t in tensors], 1)
    weights = torch.stack([streamed.moments(t, counts=False, chunk=1000) for t in tensors], 1)
    assert grads.dtype == weights.dtype == torch.float32
    assert_grad_block(grads, tensors)
    finite = [i for i, t in enumerate(tensors) if t.isfinite().all()]
    assert_weight_block(weights[:, finite], [tensors[i] for i in finite])


def test_chunks_cover_a_tensor_in_order_without_copying_it() -> None:
    conv = torch.randn(16, 8, 5, 5).to(memory_format=torch.channels_last)
    for tensor in (torch.randn(10_000), conv, torch.randn(70, 90).T, torch.tensor(3.0)):
        parts = streamed.pieces(tensor, chunk=1000)
        assert all(p.numel() <= max(1000, tensor[0].numel() if tensor.dim() else 1) for p in parts)
        assert torch.equal(torch.cat([p.reshape(-1) for p in parts]), tensor.reshape(-1))
        if tensor.dim():  # views of the tensor's own storage
            assert all(p.untyped_storage().data_ptr() == tensor.untyped_storage().data_ptr()
                       for p in parts)  # fmt: skip
    assert streamed.pieces(torch.empty(0)) == []


def statistics_in(tensors: list[Tensor], limit: int | None) -> tuple[Tensor, Tensor, stats.Scratch]:
    buf = stats.Scratch(tensors, limit)
    n = stats.numels(tensors)
    grads = stats.grad_stats(tensors, n, scratch=buf)
    weights = stats.weight_stats(tensors, n, scratch=buf)
    return grads, weights, buf


@pytest.mark.parametrize("segmented", [False, True], ids=["per-tensor", "rows"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_a_block_larger_than_the_buffer_goes_through_it_in_parts(
    monkeypatch: pytest.MonkeyPatch, segmented: bool, dtype: torch.dtype
) -> None:
    """Whatever must be loaded (an upcast, the counting passes of non-finite values, the row
    formulation's torch ops): the buffer never grows past its limit, tensors larger than it
    are read in chunks, and every statistic is what the unbounded buffer gives."""
    monkeypatch.setattr(_foreach, "_segmented", lambda device: segmented)
    monkeypatch.setattr(streamed, "CHUNK", 1000)
    tensors = large_tensors(dtype) + special_tensors(dtype) + [torch.randn(300).to(dtype)]
    limit = 4 * ROW  # the largest tensor is 9 rows; the small ones share runs
    with row_kernels.use_kernels(False):
        grads, weights, bounded = statistics_in(tensors, limit)
        whole_grads, whole_weights, whole = statistics_in(tensors, None)
    assert bounded.nbytes <= 4 * limit < whole.nbytes
    assert_grad_block(grads, tensors)
    torch.testing.assert_close(grads, whole_grads, equal_nan=True, rtol=1e-5, atol=1e-7)
    finite = [i for i, t in enumerate(tensors) if t.isfinite().all()]
    assert_weight_block(weights[:, finite], [tensors[i] for i in finite])
    torch.testing.assert_close(weights, whole_weights, equal_nan=True, rtol=1e-5, atol=1e-7)


def test_finite_float32_tensors_larger_than_the_buffer_are_still_read_in_place() -> None:
    """On CPU the finite float32 path reads the tensors themselves: no buffer, no chunks."""
    tensors = [torch.randn(9000), torch.randn(5000)]
    grads, weights, buf = statistics_in(tensors, 2 * ROW)
    assert buf.nbytes == 0
    assert_grad_block(grads, tensors)
    assert_weight_block(weights, tensors)


@pytest.mark.parametrize("segmented", [False, True], ids=["per-tensor", "rows"])
def test_a_bf16_watcher_keeps_its_buffer_within_scratch_bytes(
    monkeypatch: pytest.MonkeyPatch, segmented: bool
) -> None:
    """End to end on a bf16 model whose weight is larger than the buffer: every statistic and
    histogram as with a buffer that holds the whole model, the buffer within its cap."""
    from torch import nn

    from trickscope import watch
    from trickscope._incidents import Incidents

    monkeypatch.setattr(_foreach, "_segmented", lambda device: segmented)
    monkeypatch.setattr(streamed, "CHUNK", 5000)
    reports: dict[int, dict[str, float]] = {}
    for cap in (1 << 26, 4 * 2048):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 3000), nn.ReLU(), nn.Linear(3000, 3)).bfloat16()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        seen: dict[str, float] = {}

        def stats_out(
            step: int, keys: list[str], values: Tensor, host: object, seen: dict = seen
        ) -> None:
            seen.update(zip(keys, values.tolist(), strict=True))

        def hist_out(
            step: int, keys: list[str], bins: int, values: Tensor, seen: dict = seen
        ) -> None:
            for key, row in zip(keys, values.reshape(len(keys), -1).tolist(), strict=True):
                seen.update((f"{key}[{i}]", v) for i, v in enumerate(row))

        watcher = watch.Watcher(
            model, optimizer, every=1, start_step=0, emit=stats_out, incidents=Incidents(),
            hist_every=1, emit_hist=hist_out, scratch_bytes=cap,
        )  # fmt: skip
        with row_kernels.use_kernels(False):
            for _ in range(2):
                optimizer.zero_grad()
                model(torch.randn(4, 8).bfloat16()).float().pow(2).mean().backward()
                optimizer.step()
        watcher.close()
        assert watcher._scratches[torch.device("cpu")].nbytes <= cap
        reports[cap] = seen
    whole, bounded = reports.values()
    assert whole.keys() == bounded.keys() and "grad_std/0.weight" in whole
    assert [bounded[key] for key in whole] == pytest.approx(
        list(whole.values()), rel=1e-5, abs=1e-7, nan_ok=True
    )
