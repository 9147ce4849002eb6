"""Per-tensor reductions over a whole group of tensors at once, on a row-aligned flat buffer.

The statistics' buffer lays a group's tensors out with each one starting on a multiple of
:data:`ROW` elements and zeros after it, so that the buffer is a ``(rows, ROW)`` matrix whose rows
each belong to one tensor. A per-tensor statistic is then one dense row reduction (a single
well-balanced kernel, however many tensors there are and whatever their sizes) followed by a
reduction of the few row results of each tensor. This is how the scalar statistics are computed
on CUDA, and the histograms on every device: a per-tensor loop would launch a kernel per
parameter, ``_foreach_norm`` has no fused path for counts (``ord=0``), and ``repeat_interleave``
runs a thread per segment, which takes milliseconds on large tensors.

The zero padding is neutral to sums, norms, max |x| and non-zero counts; whatever puts other
values there (the histograms put NaN) has the next load zero it again
(:meth:`trickscope.stats.Scratch.padding_changed`).
"""

from __future__ import annotations

import torch
from torch import Tensor

ROW = 1024


def padded(size: int) -> int:
    """Elements a tensor of ``size`` takes in a row-aligned buffer (an empty one takes a row)."""
    return max(1, -(-size // ROW)) * ROW


def to_device(values: Tensor, device: torch.device) -> Tensor:
    """A host tensor on ``device`` without blocking on CUDA (through pinned memory)."""
    if device.type == "cuda":
        return values.pin_memory().to(device, non_blocking=True)
    return values.to(device)


class RowLayout:
    """Where each tensor of a group lies in a row-aligned buffer, and reductions per tensor.

    Built once per list of sizes (on the host, then copied without a sync); ``starts`` are
    element offsets into the buffer, ``elements`` its total size, a multiple of :data:`ROW`.

    A layout keeps per-tensor metadata only (each tensor's first row, its size, where its last
    row is): it lives as long as the run, so per-row index tensors would cost memory in
    proportion to the model (28 bytes per row of 1,024 elements, 0.7 % of float32 parameter
    bytes per layout, and a watcher keeps two). What a reduction needs per row (the tensor of
    each row, its element count) is derived from the offsets when it runs, over the rows at hand
    (:meth:`row_tensor`, :meth:`row_counts`), and the fused kernels find a row's tensor by a
    binary search of the offsets (:mod:`trickscope._triton_rows`).
    """

    def __init__(self, sizes: list[int], device: torch.device) -> None:
        # An empty tensor still gets one (all-padding) row, so that every tensor has a result.
        rows = [padded(size) // ROW for size in sizes]
        self.starts: list[int] = []
        offset = 0
        for count in rows:
            self.starts.append(offset * ROW)
            offset += count
        self.elements = offset * ROW
        self.tensors = len(sizes)
        counts = torch.tensor(rows, dtype=torch.int64)
        numel = torch.tensor(sizes, dtype=torch.int64)
        used = numel - (counts - 1) * ROW  # elements of each tensor in its last row
        self._device = device
        self._rows = offset
        self._host_offsets = torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)])
        self.offsets = to_device(self._host_offsets, device)  # each tensor's first row, the end
        self.sizes = to_device(numel, device)  # each tensor's elements
        self._stacked: dict[int, Tensor] = {}  # offsets for k columns laid end to end
        padding = counts.to(torch.float64) * ROW - numel.to(torch.float64)
        self.padding = to_device(padding, device)  # padding elements after each tensor
        self._last_rows = to_device(self._host_offsets[1:] - 1, device)
        self._last_used = to_device(used, device)

    @property
    def nbytes(self) -> int:
        """Bytes of the layout's own tensors: per tensor, none per row."""
        held = [self._host_offsets, self.offsets, self.sizes, self.padding, self._last_rows]
        held += [self._last_used, *self._stacked.values()]
        # On the host, ``offsets`` is ``_host_offsets`` itself: counted once.
        unique = {(t.device, t.data_ptr()): t for t in held}
        return sum(t.numel() * t.element_size() for t in unique.values())

    def row_tensor(self, chunk: slice | None = None) -> Tensor:
        """The tensor each row of ``chunk`` (default: all rows) belongs to, int64, built on the
        device from the offsets for this call (a sorted search: no sync)."""
        start, stop, _ = (chunk or slice(None)).indices(self._rows)
        index = torch.arange(start, stop, device=self._device)
        return torch.searchsorted(self.offsets[1:], index, right=True)

    def row_counts(self) -> Tensor:
        """Elements of its tensor in each row, float64 (built for this call)."""
        counts = torch.full((self._rows,), float(ROW), dtype=torch.float64, device=self._device)
        return counts.index_copy_(0, self._last_rows, self._last_used.to(torch.float64))

    def _last_is_tensor(self) -> Tensor:
        """Per tensor, which elements of its last row are its own (``(tensors, ROW)`` bool)."""
        lanes = torch.arange(ROW, device=self._device)
        return lanes[None, :] < self._last_used[:, None]

    def sum(self, per_row: Tensor) -> Tensor:
        """Per tensor, the sum of its rows' values (``(rows,)`` or ``(rows, k)``), in float64.

        Float64 keeps counts exact. The ``k`` columns of a ``(rows, k)`` input are laid end to
        end and summed in one segmented reduction of ``k`` times as many segments (a 2-D
        ``segment_reduce`` would take a kernel that loops over each segment in one thread).
        """
        values = per_row.to(torch.float64)
        if values.dim() == 1:
            return self._reduce(values, "sum", self.offsets)
        columns = values.shape[1]
        offsets = self._stacked.get(columns)
        if offsets is None:
            starts = [self._host_offsets[:-1] + column * self._rows for column in range(columns)]
            stacked = torch.cat([*starts, torch.tensor([columns * self._rows])])
            offsets = self._stacked[columns] = to_device(stacked, self._device)
        sums = self._reduce(values.T.contiguous().reshape(-1), "sum", offsets)
        return sums.view(columns, -1).T

    @staticmethod
    def _reduce(values: Tensor, how: str, offsets: Tensor) -> Tensor:
        # unsafe: skips any check of the offsets that would read them back to the host (a sync);
        # they are built above from the sizes, so they hold by construction.
        return torch.segment_reduce(values, how, offsets=offsets, unsafe=True)

    def max(self, per_row: Tensor) -> Tensor:
        """Per tensor, the largest of its rows' values (NaN wherever a row is NaN)."""
        return self._reduce(per_row, "max", self.offsets)

    def min(self, per_row: Tensor) -> Tensor:
        """Per tensor, the smallest of its rows' values (NaN wherever a row is NaN)."""
        return self._reduce(per_row, "min", self.offsets)

    def per_row(self, per_tensor: Tensor, chunk: slice | None = None) -> Tensor:
        """A per-tensor value repeated for each of the tensor's rows (those of ``chunk``)."""
        return per_tensor.index_select(0, self.row_tensor(chunk))

    def moments(self, matrix: Tensor) -> tuple[Tensor, Tensor]:
        """Per row of the ``(rows, ROW)`` buffer (its padding zero), the mean and the sum of
        squared deviations (M2) of the row's own elements, in float64.

        One ``var_mean`` over the rows (Welford, stable); each tensor's last row, which holds
        padding, is redone over its own elements (a small gather). :meth:`m2_between_rows` then
        merges the rows of a tensor with the parallel formula ``M2 = Σ M2ᵢ + Σ nᵢ (meanᵢ −
        mean)²``, which has no cancellation, unlike ``Σx² − n·mean²``.
        """
        variance, row_mean = torch.var_mean(matrix, dim=1, correction=0)
        last = matrix.index_select(0, self._last_rows)
        # NaN for an empty tensor, as Tensor.mean
        last_mean = last.sum(dim=1) / self._last_used.to(last.dtype)
        centred = torch.where(self._last_is_tensor(), last - last_mean[:, None], 0.0)
        row_mean = row_mean.index_copy(0, self._last_rows, last_mean)
        row_m2 = (variance * ROW).index_copy(0, self._last_rows, centred.square().sum(dim=1))
        return row_mean.to(torch.float64), row_m2.to(torch.float64)

    def m2_between_rows(self, row_mean: Tensor, mean: Tensor) -> Tensor:
        """Per tensor, ``Σ nᵢ (meanᵢ − mean)²`` over its rows (float64)."""
        apart = row_mean - self.per_row(mean)
        return self.sum(self.row_counts() * apart.square())

    def zero_padding(self, matrix: Tensor) -> None:
        """Zero the elements after each tensor in the ``(rows, ROW)`` buffer, in place."""
        self.fill_padding(matrix, 0.0)  # a select, not a product: NaN · 0 is NaN

    def fill_padding(self, matrix: Tensor, value: float) -> None:
        """Set the elements after each tensor in the ``(rows, ROW)`` buffer to ``value``."""
        last = matrix.index_select(0, self._last_rows)
        filler = torch.full((), value, dtype=matrix.dtype, device=matrix.device)
        matrix.index_copy_(0, self._last_rows, torch.where(self._last_is_tensor(), last, filler))
