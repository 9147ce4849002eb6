"""Statistics against plain per-parameter torch expressions, fused and fallback paths alike."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from tests.stats_reference import (
    assert_close,
    assert_grad_block,
    assert_histograms,
    assert_weight_block,
    reference_grad,
    reference_histogram,
    reference_weight,
    small_models,
    special_tensors,
)
from trickscope import _foreach, segments, stats, streamed


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_grad_stats_match_reference(dtype: torch.dtype, fused: bool) -> None:
    grads = special_tensors(dtype)
    block = stats.grad_stats(grads, stats.numels(grads), fused=fused)
    assert block.shape == (len(stats.GRAD_STATS), len(grads))
    assert block.dtype == torch.float32
    for column, g in enumerate(grads):
        assert_close(block[:, column].tolist(), reference_grad(g), f"{dtype} tensor {column}")


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_weight_stats_match_reference(dtype: torch.dtype, fused: bool) -> None:
    weights = [t for t in special_tensors(dtype) if torch.isfinite(t.float()).all()]
    block = stats.weight_stats(weights, stats.numels(weights), fused=fused)
    for column, w in enumerate(weights):
        assert_close(block[:, column].tolist(), reference_weight(w), f"{dtype} tensor {column}")


def snapshot(tensors: list[Tensor]) -> stats.Scratch:
    buffer = stats.Scratch(tensors)
    buffer.load(tensors, fused=True)
    return buffer


@pytest.mark.parametrize("segmented", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_update_ratio_is_relative_change_of_the_weights(
    monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype, segmented: bool
) -> None:
    monkeypatch.setattr(_foreach, "_segmented", lambda device: segmented)
    torch.manual_seed(2)
    before = [torch.randn(10, 3).to(dtype), torch.randn(4).to(dtype), torch.randn(1500).to(dtype)]
    after = [(b.float() + 1e-2 * torch.randn(b.shape)).to(dtype) for b in before]
    expected = [
        (torch.linalg.vector_norm(a.float() - b.float()) / torch.linalg.vector_norm(b.float()))
        for a, b in zip(after, before, strict=True)
    ]
    ratio = stats.update_ratio(after, snapshot(before)).tolist()
    assert ratio == pytest.approx([e.item() for e in expected], rel=1e-5)
    # The row formulation may reuse a buffer that holds ``after`` already.
    scratch = snapshot(after)
    reused = stats.update_ratio(after, snapshot(before), scratch=scratch, after_loaded=True)
    assert reused.tolist() == pytest.approx([e.item() for e in expected], rel=1e-5)


def test_foreach_fast_path_and_fallback_agree() -> None:
    assert _foreach.fused_available()
    xs = special_tensors(torch.float32)
    for ord in (0, 1, 2, math.inf):
        fused = torch.stack(_foreach.norm(xs, ord, fused=True))
        loop = torch.stack(_foreach.norm(xs, ord, fused=False))
        torch.testing.assert_close(fused, loop, equal_nan=True)
    pairs = [
        (_foreach.mul(xs, 0.0, fused=True), _foreach.mul(xs, 0.0, fused=False)),
        (_foreach.sub(xs, xs, fused=True), _foreach.sub(xs, xs, fused=False)),
    ]
    for fused_out, loop_out in pairs:
        for f, lo in zip(fused_out, loop_out, strict=True):
            torch.testing.assert_close(f, lo, equal_nan=True)
    dst_a = [torch.empty_like(x) for x in xs]
    dst_b = [torch.empty_like(x) for x in xs]
    _foreach.copy_(dst_a, xs, fused=True)
    _foreach.copy_(dst_b, xs, fused=False)
    for a, b, x in zip(dst_a, dst_b, xs, strict=True):
        torch.testing.assert_close(a, x, equal_nan=True)
        torch.testing.assert_close(b, x, equal_nan=True)
    _foreach.sub_(dst_a, xs, fused=True)
    _foreach.sub_(dst_b, xs, fused=False)
    for a, b in zip(dst_a, dst_b, strict=True):
        torch.testing.assert_close(a, b, equal_nan=True)


def mean_and_m2(buf: stats.Scratch, sizes: list[int]) -> tuple[Tensor, Tensor]:
    rows = buf.rows
    row_mean, row_m2 = rows.moments(buf.matrix)
    sums = rows.sum(torch.stack([row_mean * rows.row_counts(), row_m2], 1))
    mean = sums[:, 0] / torch.tensor(sizes, dtype=torch.float64)
    return mean, sums[:, 1] + rows.m2_between_rows(row_mean, mean)


def test_row_layout_reduces_each_tensor_apart() -> None:
    """Tensors of 0, 1, ROW-1, ROW and ROW+1 elements: every boundary case of the padding."""
    torch.manual_seed(0)
    sizes = [3, 0, segments.ROW - 1, segments.ROW, segments.ROW + 1, 1]
    xs = [torch.randn(size) for size in sizes]
    xs[2][5] = math.nan
    buf = stats.Scratch([torch.ones(5000)])  # a bigger layout first: its values must not leak
    buf.load([torch.full((5000,), 7.0)], fused=True)
    buf.bind(xs).load(xs, fused=True)
    rows, matrix = buf.rows, buf.matrix
    assert matrix.shape == (rows.elements // segments.ROW, segments.ROW)
    assert matrix.sum().isnan() and matrix.nan_to_num().sum() == pytest.approx(
        sum(x.nan_to_num().sum().item() for x in xs), rel=1e-5
    )  # padding is zero: only the tensors' own values remain
    torch.testing.assert_close(
        rows.sum(matrix.sum(dim=1)),
        torch.stack([x.double().sum() for x in xs]),
        equal_nan=True,
        rtol=1e-6,  # row sums are float32
        atol=1e-6,
    )
    columns = torch.stack([matrix.sum(dim=1), matrix.isnan().sum(dim=1), -matrix[:, 0]], 1)
    stacked = rows.sum(columns)  # k columns in one reduction: each as if reduced alone
    assert stacked.shape == (len(xs), 3)
    for column in range(3):
        torch.testing.assert_close(stacked[:, column], rows.sum(columns[:, column]), equal_nan=True)
    absmax = rows.max(torch.linalg.vector_norm(matrix, math.inf, dim=1))
    expected = torch.stack([x.abs().max() if x.numel() else torch.tensor(0.0) for x in xs])
    torch.testing.assert_close(absmax, expected, equal_nan=True)
    mean, m2 = mean_and_m2(buf, sizes)
    for index, x in enumerate(xs):
        expected_mean = x.double().mean()
        expected_m2 = (x.double() - expected_mean).square().sum()
        assert math.isnan(mean[index]) == math.isnan(expected_mean), index
        if x.numel():  # an empty tensor's M2 is NaN here, 0 in the reference: its std is NaN
            assert math.isnan(m2[index]) == math.isnan(expected_m2), index
        if not math.isnan(expected_mean):
            assert mean[index].item() == pytest.approx(expected_mean.item(), rel=1e-6, abs=1e-9)
            assert m2[index].item() == pytest.approx(expected_m2.item(), rel=1e-5, abs=1e-9)
    matrix.add_(1.0)
    rows.zero_padding(matrix)
    for view, x in zip(buf.views, xs, strict=True):
        torch.testing.assert_close(view, x + 1.0, equal_nan=True)
    assert matrix.nan_to_num().sum() == pytest.approx(
        sum((x + 1.0).nan_to_num().sum().item() for x in xs), rel=1e-5
    )


def layout_tensor_bytes(rows: segments.RowLayout) -> int:
    """Bytes of every tensor a layout holds (attributes and cached dictionaries alike)."""
    held: list[Tensor] = []
    for value in vars(rows).values():
        if isinstance(value, Tensor):
            held.append(value)
        elif isinstance(value, dict):
            held.extend(v for v in value.values() if isinstance(v, Tensor))
    unique = {t.data_ptr(): t for t in held}  # on the host a copy to the device is itself
    return sum(t.numel() * t.element_size() for t in unique.values())


def test_a_row_layout_holds_per_tensor_metadata_only() -> None:
    """A layout lives as long as the run: what it holds depends on the number of tensors, not
    on their sizes (no index tensor per row), whatever reductions ran on it."""
    small = segments.RowLayout([3, 1000, 7], torch.device("cpu"))
    large = segments.RowLayout([3, 1_000_000_000, 7], torch.device("cpu"))  # ~1M rows
    for rows in (small, large):
        rows.sum(torch.ones(rows.elements // segments.ROW, 3))
    assert layout_tensor_bytes(large) == layout_tensor_bytes(small) == large.nbytes
    assert large.nbytes < 64 * 3 * 8
    counts = small.row_counts()
    assert counts.tolist() == [3.0, 1000.0, 7.0]
    assert large.row_tensor(slice(0, 2)).tolist() == [0, 1]
    assert large.row_tensor(slice(large.elements // segments.ROW - 2, None)).tolist() == [1, 2]


def test_mean_and_m2_have_no_cancellation_on_offset_tensors() -> None:
    """LayerNorm-like weights (≈1, tiny spread) and constants: E[x²] − E[x]² would lose them."""
    torch.manual_seed(0)
    xs = [1.0 + 1e-4 * torch.randn(3000), torch.full((2500,), 0.1), torch.full((7,), 3.0)]
    buf = stats.Scratch(xs)
    buf.load(xs, fused=True)
    mean, m2 = mean_and_m2(buf, [x.numel() for x in xs])
    std = (m2 / torch.tensor([x.numel() - 1.0 for x in xs], dtype=torch.float64)).sqrt()
    assert std[0].item() == pytest.approx(xs[0].double().std().item(), rel=1e-3)
    assert std[1].item() < 1e-8 and std[2].item() == 0.0


def test_total_norm_is_norm_of_all_gradients() -> None:
    grads = [torch.randn(5), torch.randn(2, 2)]
    norms = stats.grad_stats(grads, stats.numels(grads))[0]
    flat = torch.cat([g.reshape(-1) for g in grads])
    assert stats.total_norm(norms).item() == pytest.approx(torch.linalg.vector_norm(flat).item())


def test_stats_of_a_real_model_match_reference() -> None:
    torch.manual_seed(0)
    model = nn.TransformerEncoderLayer(d_model=16, nhead=2, dim_feedforward=32, batch_first=True)
    model(torch.randn(3, 5, 16)).pow(2).mean().backward()
    grads = [p.grad for p in model.parameters()]
    block = stats.grad_stats(grads, stats.numels(grads))  # type: ignore[arg-type]
    for column, g in enumerate(grads):
        assert g is not None
        assert_close(block[:, column].tolist(), reference_grad(g), f"param {column}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_histograms_match_histc_per_tensor(dtype: torch.dtype) -> None:
    torch.manual_seed(3)
    xs = special_tensors(dtype) + [
        torch.full((5,), math.nan, dtype=dtype),  # no finite value at all
        torch.zeros(7, dtype=dtype),
        (torch.randn(1000) * 50).to(dtype),
    ]
    bins = 16
    out = stats.histograms(xs, bins)
    assert out.shape == (len(xs), bins + 3)
    assert out.dtype == torch.float64
    for row, x in zip(out.tolist(), xs, strict=True):
        lo, hi, nonfinite, counts = reference_histogram(x, bins)
        assert row[0] == lo and row[1] == hi
        assert row[2] == nonfinite
        assert row[3:] == counts
        assert sum(row[3:]) + row[2] == x.numel()


def test_histograms_count_nan_and_inf_apart_from_the_bins() -> None:
    x = torch.tensor([math.nan, math.inf, -math.inf, 0.0, 1.0, 2.0, 3.0, 4.0])
    row = stats.histograms([x], 4)[0].tolist()
    assert row[:3] == [0.0, 4.0, 3.0]
    assert row[3:] == [1.0, 1.0, 1.0, 2.0]  # the top edge belongs to the last bin, as in histc


def test_histograms_of_a_real_model_match_histc() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(8 * 36, 4))
    model(torch.randn(2, 3, 8, 8)).pow(2).mean().backward()
    for source in ([p.grad for p in model.parameters()], list(model.parameters())):
        out = stats.histograms(source, stats.BINS)  # type: ignore[arg-type]
        for row, x in zip(out.tolist(), source, strict=True):
            lo, hi, nonfinite, counts = reference_histogram(x, stats.BINS)  # type: ignore[arg-type]
            assert row[:3] == [lo, hi, nonfinite]
            assert row[3:] == counts


@pytest.mark.parametrize("segmented", [False, True])
@pytest.mark.parametrize("fused", [True, False])
def test_every_statistic_matches_the_per_parameter_reference_on_several_models(
    monkeypatch: pytest.MonkeyPatch, segmented: bool, fused: bool
) -> None:
    # segmented=True runs the CUDA formulation (segment_reduce, repeat_interleave, index_add_,
    # the fused inf-norm) on CPU, so it is held to the reference without a GPU.
    monkeypatch.setattr(_foreach, "_segmented", lambda device: segmented)
    for model in small_models():
        params = list(model.parameters())
        grads: list[Tensor] = [p.grad for p in params if p.grad is not None]
        scratch = stats.Scratch(grads)
        block = stats.grad_stats(grads, stats.numels(grads), scratch=scratch, fused=fused)
        assert_grad_block(block, grads, f"{model} grad")
        block = stats.weight_stats(params, stats.numels(params), scratch=stats.Scratch(params))
        assert_weight_block(block, params, f"{model} weight")
        before = [p.detach() + 0.01 for p in params]
        ratio = stats.update_ratio(params, snapshot(before), fused=fused).tolist()
        for r, a, b in zip(ratio, params, before, strict=True):
            expected = torch.linalg.vector_norm(a.detach() - b) / torch.linalg.vector_norm(b)
            assert r == pytest.approx(expected.item(), rel=1e-4)
        assert_histograms(stats.histograms(grads, 32), grads, 32)


@pytest.mark.parametrize("segmented", [False, True])
def test_specials_match_the_reference_in_both_formulations(
    monkeypatch: pytest.MonkeyPatch, segmented: bool
) -> None:
    monkeypatch.setattr(_foreach, "_segmented", lambda device: segmented)
    grads = special_tensors(torch.float32)
    assert_grad_block(stats.grad_stats(grads, stats.numels(grads)), grads)
    assert_histograms(stats.histograms(grads, 8), grads, 8)


def test_histograms_in_small_passes_equal_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(3)
    xs = special_tensors(torch.float32) + [torch.randn(5000), torch.randn(40, 70)]
    whole = stats.histograms(xs, 16)
    monkeypatch.setattr(stats, "HIST_ROWS", 2)  # many passes, tensors split across them
    torch.testing.assert_close(stats.histograms(xs, 16), whole, equal_nan=True)


@pytest.mark.parametrize("segmented", [False, True])
def test_a_shared_buffer_serves_statistics_after_histograms(
    monkeypatch: pytest.MonkeyPatch, segmented: bool
) -> None:
    """Histograms put NaN in the buffer's padding; the statistics that follow must not see it."""
    monkeypatch.setattr(_foreach, "_segmented", lambda device: segmented)
    xs = special_tensors(torch.float32)
    finite = [x for x in xs if x.isfinite().all()]
    scratch = stats.Scratch(xs)
    stats.histograms(xs, 8, scratch=scratch)
    assert_weight_block(stats.weight_stats(finite, stats.numels(finite), scratch=scratch), finite)
    stats.histograms(finite, 8, scratch=scratch)
    assert_grad_block(stats.grad_stats(xs, stats.numels(xs), scratch=scratch), xs)


def test_cpu_std_in_one_pass_where_the_mean_is_small_and_exact_elsewhere() -> None:
    """The CPU path takes the std from the norm and the mean where n·mean² ≤ ½‖x‖² (one bit
    lost at most) and from torch.std where the mean dominates: both as accurate as the float32
    L2 norm itself (~1e-5 relative over a million elements, as the two-pass form was)."""
    torch.manual_seed(0)
    xs = [
        0.02 * torch.randn(1_000_000),  # a weight matrix: one pass
        0.02 * torch.randn(300_000) + 0.0199,  # mean share just under the bound: one pass
        0.02 * torch.randn(300_000) + 0.0201,  # just over: exact
        1.0 + 1e-4 * torch.randn(3000),  # a LayerNorm weight: exact
        torch.full((2500,), 0.1),  # constant: std 0, not cancellation noise
        torch.tensor([2.5]),  # one element: NaN, as Tensor.std
    ]
    for block in (stats.weight_stats(xs, stats.numels(xs)), stats.grad_stats(xs, stats.numels(xs))):
        std = block[2 if block.shape[0] == 3 else 3]
        for got, x in zip(std.tolist(), xs, strict=True):
            want = x.double().std().item() if x.numel() > 1 else math.nan
            if math.isnan(want):
                assert math.isnan(got)
            else:
                assert got == pytest.approx(want, rel=3e-5, abs=5e-8)  # 0.1 is 7e-9 apart


def test_update_ratio_reloads_a_buffer_that_does_not_hold_the_weights(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``after_loaded`` is a hint: where the weights were read in place (the CUDA kernels), the
    buffer still holds the gradients, ``Scratch.loaded`` says so, and the ratio reloads."""
    monkeypatch.setattr(_foreach, "_segmented", lambda device: True)
    torch.manual_seed(4)
    weights = [torch.randn(30, 40), torch.randn(1500)]
    before = [w - 0.01 * torch.randn(w.shape) for w in weights]
    scratch = stats.Scratch(weights)
    scratch.load([torch.randn(w.shape) for w in weights], fused=True)  # the gradients
    scratch.forget()  # what reading the weights in place leaves
    assert not scratch.loaded
    ratio = stats.update_ratio(weights, snapshot(before), scratch=scratch, after_loaded=True)
    expected = [
        (torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b)).item()
        for a, b in zip(weights, before, strict=True)
    ]
    assert ratio.tolist() == pytest.approx(expected, rel=1e-5)
    assert scratch.loaded  # the weights, now


@pytest.mark.parametrize(
    "values",
    [
        torch.cat([torch.randn(3000) * 5, torch.tensor([math.nan, -math.inf, math.inf, 0.0])]),
        torch.full((2500,), 2.0),  # one value: edges widened by 1
        torch.tensor([math.nan, math.inf]),  # nothing finite
        torch.empty(0),
        torch.randn(70, 40).to(torch.bfloat16),
    ],
)
def test_a_streamed_histogram_equals_the_histogram_through_the_buffer(
    values: torch.Tensor,
) -> None:
    """A tensor larger than the scratch buffer is read a chunk at a time, to the same counts."""
    whole = stats.histograms([values])
    chunked = streamed.histogram(values, stats.BINS, chunk=1000)
    assert torch.equal(chunked, whole)
