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
        counts = torch.tensor(rows, dtype=torch.int64)
        last = counts.cumsum(0) - 1
        used = torch.tensor(sizes, dtype=torch.int64) - (counts - 1) * ROW
        valid = torch.arange(ROW)[None, :] < used[:, None]
        row_tensor = torch.repeat_interleave(counts)
        row_counts = torch.full((len(row_tensor),), float(ROW), dtype=torch.float64)
        row_counts[last] = used.to(torch.float64)
        self._device = device
        self._rows = offset
        self._host_offsets = torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)])
        self.offsets = to_device(self._host_offsets, device)  # each tensor's first row, the end
        self._stacked: dict[int, Tensor] = {}  # offsets for k columns laid end to end
        self.row_tensor = to_device(row_tensor, device)  # the tensor each row belongs to
        # Where each row starts within its tensor, in elements.
        row_start = (torch.arange(offset) - self._host_offsets[row_tensor]) * ROW
        self.row_start = to_device(row_start, device)
        padding = counts.to(torch.float64) * ROW - torch.tensor(sizes, dtype=torch.float64)
        self.padding = to_device(padding, device)  # padding elements after each tensor
        self.row_counts = to_device(row_counts, device)  # elements of its tensor in each row
        self.row_valid = to_device(row_counts.to(torch.int32), device)  # the same, as int32
        self._last_rows = to_device(last, device)
        self._last_used = to_device(used.to(torch.float32), device)
        self._last_is_tensor = to_device(valid, device)

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

    def per_row(self, per_tensor: Tensor) -> Tensor:
        """A per-tensor value repeated for each of the tensor's rows."""
        return per_tensor.index_select(0, self.row_tensor)

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
        last_mean = last.sum(dim=1) / self._last_used  # NaN for an empty tensor, as Tensor.mean
        centred = torch.where(self._last_is_tensor, last - last_mean[:, None], 0.0)
        row_mean = row_mean.index_copy(0, self._last_rows, last_mean)
        row_m2 = (variance * ROW).index_copy(0, self._last_rows, centred.square().sum(dim=1))
        return row_mean.to(torch.float64), row_m2.to(torch.float64)

    def m2_between_rows(self, row_mean: Tensor, mean: Tensor) -> Tensor:
        """Per tensor, ``Σ nᵢ (meanᵢ − mean)²`` over its rows (float64)."""
        apart = row_mean - mean.index_select(0, self.row_tensor)
        return self.sum(self.row_counts * apart.square())

    def zero_padding(self, matrix: Tensor) -> None:
        """Zero the elements after each tensor in the ``(rows, ROW)`` buffer, in place."""
        self.fill_padding(matrix, 0.0)  # a select, not a product: NaN · 0 is NaN

    def fill_padding(self, matrix: Tensor, value: float) -> None:
        """Set the elements after each tensor in the ``(rows, ROW)`` buffer to ``value``."""
        last = matrix.index_select(0, self._last_rows)
        filler = torch.full((), value, dtype=matrix.dtype, device=matrix.device)
        matrix.index_copy_(0, self._last_rows, torch.where(self._last_is_tensor, last, filler))
