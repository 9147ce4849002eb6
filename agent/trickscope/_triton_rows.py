"""Triton kernels behind :mod:`trickscope.row_kernels`; imported only where Triton is.

Two stages. A row kernel (``*_rows``) gives each row of a group's row layout (see
:mod:`trickscope.segments`: up to :data:`~trickscope.segments.ROW` elements of one tensor) one
program, which reads the row once and writes its partial results, accumulated in float64: ``x²``
cannot overflow there, nor a tiny gradient's square underflow, and counts stay exact. A merge
kernel (``merge_*``) then gives each tensor one program that combines its rows' partial results
(a few thousand at most, small) into the final statistics, float32, one output row per statistic
and one column per tensor.

The row kernels read the tensors where they are, through a table of their addresses
(``table_ptr``, int64, one per tensor, all of dtype ``DTYPE``). The layout is given per tensor
only (``offsets``: each tensor's first row, then the number of rows; ``sizes``: its elements):
a row's program finds its tensor by a binary search of the offsets (``steps`` halvings, a few
scalar loads of a small array that stays in cache), so that no index tensor the size of the
model's rows is kept. Row ``r`` of tensor ``t`` is its elements ``(r − offsets[t]) · ROW ..``,
up to its end. Masked loads never touch memory past a tensor's end. The table may point at the
parameters and gradients themselves (no copy) or at a float32 buffer's views.

(No ``from __future__ import annotations`` here: Triton reads the ``tl.constexpr`` annotations.)
"""

import torch
import triton
import triton.language as tl

# The dtypes the row kernels read in place; any other is copied to float32 first.
DTYPES = {
    torch.float32: tl.float32,
    torch.float64: tl.float64,
    torch.bfloat16: tl.bfloat16,
    torch.float16: tl.float16,
}


@triton.jit
def _tensor_of(offsets_ptr, tensors, steps, row):
    """The tensor whose rows hold ``row``: the ``t`` with ``offsets[t] <= row < offsets[t + 1]``
    (every tensor has a row, so the offsets rise strictly), after ``steps`` halvings of
    ``[0, tensors)`` (``steps`` = ``tensors.bit_length()`` is enough)."""
    low = row * 0
    high = low + tensors
    for _ in range(steps):
        middle = (low + high) // 2
        below = tl.load(offsets_ptr + middle) <= row
        low = tl.where(below, middle, low)
        high = tl.where(below, high, middle)
    return low


@triton.jit
def _row_place(offsets_ptr, sizes_ptr, tensors, steps, row, ROW: tl.constexpr):
    """The row's tensor, the row's first element in it and how many of its elements the row
    holds (0 for an empty tensor's row)."""
    tensor = _tensor_of(offsets_ptr, tensors, steps, row)
    start = (row - tl.load(offsets_ptr + tensor)) * ROW
    valid = tl.minimum(tl.load(sizes_ptr + tensor) - start, ROW)
    return tensor, start, valid


@triton.jit
def _load_row(table_ptr, tensor, start, valid, ROW: tl.constexpr, DTYPE: tl.constexpr):
    """The row's elements (zeros after its ``valid`` ones), in the tensor's own dtype."""
    base = tl.load(table_ptr + tensor).to(tl.pointer_type(DTYPE))
    lanes = tl.arange(0, ROW)
    return tl.load(base + start + lanes, mask=lanes < valid, other=0.0)


@triton.jit
def moment_rows(
    table_ptr,
    offsets_ptr,
    sizes_ptr,
    tensors,
    steps,
    out_ptr,
    COUNTS: tl.constexpr,
    COLUMNS: tl.constexpr,
    ROW: tl.constexpr,
    DTYPE: tl.constexpr,
):
    """Per row: Σx², Σx, M2 over the row's own ``valid`` elements; with ``COUNTS`` also the
    non-zero, NaN and ±Inf counts and max |x| (NaN where a NaN is). ``COLUMNS`` is the output's
    row width: 7 with counts, else 3."""
    row = tl.program_id(0).to(tl.int64)
    tensor, start, valid = _row_place(offsets_ptr, sizes_ptr, tensors, steps, row, ROW)
    x = _load_row(table_ptr, tensor, start, valid, ROW, DTYPE).to(tl.float64)
    total = tl.sum(x, axis=0)
    # Two passes over registers: the deviations from the row's own mean, so no cancellation.
    # An empty tensor's row (valid = 0) has a NaN mean and no deviations: M2 = 0.
    mean = total / valid.to(tl.float64)
    deviation = tl.where(tl.arange(0, ROW) < valid, x - mean, 0.0)
    out = out_ptr + row * COLUMNS
    tl.store(out, tl.sum(x * x, axis=0))
    tl.store(out + 1, total)
    tl.store(out + 2, tl.sum(deviation * deviation, axis=0))
    if COUNTS:
        # On the float64 values: a half-precision NaN compares as a NaN only once converted in
        # Triton's interpreter.
        nan = tl.sum((x != x).to(tl.int32), axis=0)
        magnitude = tl.abs(x)
        tl.store(out + 3, tl.sum((x != 0.0).to(tl.int32), axis=0).to(tl.float64))
        tl.store(out + 4, nan.to(tl.float64))
        tl.store(out + 5, tl.sum((magnitude == float("inf")).to(tl.int32), axis=0).to(tl.float64))
        # A max reduction may drop NaN: it is put back from the count.
        tl.store(out + 6, tl.where(nan > 0, float("nan"), tl.max(magnitude, axis=0)))


@triton.jit
def update_rows(
    before_ptr,
    table_ptr,
    offsets_ptr,
    sizes_ptr,
    tensors,
    steps,
    out_ptr,
    ROW: tl.constexpr,
    DTYPE: tl.constexpr,
):
    """Per row: Σb² and Σ(b − a)² of the snapshot ``before`` (a row-aligned float32 buffer,
    its padding zero) and the tensors now (through the table)."""
    row = tl.program_id(0).to(tl.int64)
    tensor, start, valid = _row_place(offsets_ptr, sizes_ptr, tensors, steps, row, ROW)
    before = tl.load(before_ptr + row * ROW + tl.arange(0, ROW)).to(tl.float64)
    after = _load_row(table_ptr, tensor, start, valid, ROW, DTYPE)
    change = before - after.to(tl.float64)
    tl.store(out_ptr + row * 2, tl.sum(before * before, axis=0))
    tl.store(out_ptr + row * 2 + 1, tl.sum(change * change, axis=0))


@triton.jit
def merge_moments(
    rows_ptr,
    offsets_ptr,
    sizes_ptr,
    out_ptr,
    tensors,
    COUNTS: tl.constexpr,
    COLUMNS: tl.constexpr,
    BLOCK: tl.constexpr,
    ROW: tl.constexpr,
):
    """Per tensor, from its rows of :func:`moment_rows`: L2 norm, mean and unbiased std, and
    with ``COUNTS`` max |x|, zero fraction, NaN and ±Inf counts; out is ``(3 or 7, tensors)``
    in the order of ``trickscope.stats.WEIGHT_STATS`` or ``GRAD_STATS``.

    The tensor's M2 merges its rows' with the parallel formula ``Σ M2ᵣ + Σ nᵣ (meanᵣ − mean)²``
    (no cancellation), which needs the tensor's mean: hence two loops over its rows.
    """
    tensor = tl.program_id(0)
    start = tl.load(offsets_ptr + tensor)
    end = tl.load(offsets_ptr + tensor + 1)
    size = tl.load(sizes_ptr + tensor)
    n = size.to(tl.float64)
    lanes = tl.arange(0, BLOCK)
    squares = tl.zeros([BLOCK], tl.float64)
    sums = tl.zeros([BLOCK], tl.float64)
    nonzero = tl.zeros([BLOCK], tl.float64)
    nan = tl.zeros([BLOCK], tl.float64)
    inf = tl.zeros([BLOCK], tl.float64)
    largest = tl.zeros([BLOCK], tl.float64)
    for base in range(start, end, BLOCK):
        row = base + lanes
        inside = row < end
        at = rows_ptr + row * COLUMNS
        squares += tl.load(at, mask=inside, other=0.0)
        sums += tl.load(at + 1, mask=inside, other=0.0)
        if COUNTS:
            nonzero += tl.load(at + 3, mask=inside, other=0.0)
            nan += tl.load(at + 4, mask=inside, other=0.0)
            inf += tl.load(at + 5, mask=inside, other=0.0)
            largest = tl.maximum(largest, tl.load(at + 6, mask=inside, other=0.0))
    mean = tl.sum(sums, axis=0) / n
    spread = tl.zeros([BLOCK], tl.float64)
    for base in range(start, end, BLOCK):
        row = base + lanes
        inside = row < end
        # The row's own elements: ROW, but for the tensor's last row.
        count = tl.minimum(size - (row - start) * ROW, ROW).to(tl.float64)
        count = tl.where(inside, count, 1.0)
        apart = tl.load(rows_ptr + row * COLUMNS + 1, mask=inside, other=0.0) / count - mean
        within = tl.load(rows_ptr + row * COLUMNS + 2, mask=inside, other=0.0)
        spread += tl.where(inside, within + count * apart * apart, 0.0)
    # + mean · 0: NaN wherever the mean is not finite, as Tensor.std gives.
    std = tl.sqrt(tl.sum(spread, axis=0) / (n - 1.0)) + mean * 0.0
    norm = tl.sqrt(tl.sum(squares, axis=0))
    if COUNTS:
        nans = tl.sum(nan, axis=0)
        # A max may drop NaN: it is put back from the count.
        absmax = tl.where(nans > 0, float("nan"), tl.max(largest, axis=0))
        tl.store(out_ptr + tensor, norm.to(tl.float32))
        tl.store(out_ptr + tensors + tensor, absmax.to(tl.float32))
        tl.store(out_ptr + 2 * tensors + tensor, mean.to(tl.float32))
        tl.store(out_ptr + 3 * tensors + tensor, std.to(tl.float32))
        zero_frac = (n - tl.sum(nonzero, axis=0)) / n
        tl.store(out_ptr + 4 * tensors + tensor, zero_frac.to(tl.float32))
        tl.store(out_ptr + 5 * tensors + tensor, nans.to(tl.float32))
        tl.store(out_ptr + 6 * tensors + tensor, tl.sum(inf, axis=0).to(tl.float32))
    else:
        tl.store(out_ptr + tensor, norm.to(tl.float32))
        tl.store(out_ptr + tensors + tensor, mean.to(tl.float32))
        tl.store(out_ptr + 2 * tensors + tensor, std.to(tl.float32))


@triton.jit
def merge_update(rows_ptr, offsets_ptr, out_ptr, BLOCK: tl.constexpr):
    """Per tensor, from its rows of :func:`update_rows`: ``sqrt(Σ(b − a)²) / sqrt(Σb²)``."""
    tensor = tl.program_id(0)
    start = tl.load(offsets_ptr + tensor)
    end = tl.load(offsets_ptr + tensor + 1)
    lanes = tl.arange(0, BLOCK)
    before = tl.zeros([BLOCK], tl.float64)
    change = tl.zeros([BLOCK], tl.float64)
    for base in range(start, end, BLOCK):
        row = base + lanes
        inside = row < end
        before += tl.load(rows_ptr + row * 2, mask=inside, other=0.0)
        change += tl.load(rows_ptr + row * 2 + 1, mask=inside, other=0.0)
    ratio = tl.sqrt(tl.sum(change, axis=0)) / tl.sqrt(tl.sum(before, axis=0))
    tl.store(out_ptr + tensor, ratio.to(tl.float32))
