"""The update ratio ``‖w_after − w_before‖ / ‖w_before‖`` from a fixed sample of each tensor.

Keeping a float32 copy of every weight from before the step would cost 4 bytes per parameter for
the life of the run (28 GB for a 7B-parameter model). Instead each tensor gets a sample chosen
once, from its size alone: the whole tensor where it has at most :data:`SAMPLE_ELEMENTS`
elements (the ratio is then exact), else that many elements at an even, odd step through its
flat layout (:func:`stride_of`), which for a ``Linear`` weight visits every output unit and all
columns. Only the sample is copied before the step, and the ratio is
``sqrt(Σ_s (b − a)²) / sqrt(Σ_s b²)`` over the sampled elements.

Its error against the exact ratio is the sampling error of a ratio of two sums over ``m``
elements: for elements of similar size about ``sqrt(κ/(2m))``, κ the excess spread of the
squared values (κ = 2 for Gaussian-like weights and updates), i.e. ~1 % at ``m = 8192``; the
test suite measures it on real steps of AdamW and SGD (README, ``update_ratio``).

The copies are ``_foreach`` ops over lists of strided views, and the sums one segmented
reduction: no host sync, and memory of ``4 · 2 · m`` bytes per tensor plus its offsets.
"""

from __future__ import annotations

import torch
from torch import Tensor

from trickscope import _foreach
from trickscope.segments import to_device

SAMPLE_ELEMENTS = 8192  # elements kept per tensor: a tensor this small is taken whole


def stride_of(numel: int, sample: int = SAMPLE_ELEMENTS) -> int:
    """The step between the sampled elements of a flat tensor of ``numel`` elements: 1 (the
    whole tensor) where ``numel <= sample``, else about ``numel / sample``, made odd so that it
    shares no factor with the power-of-two widths of most layers (an even step on a row of
    2048 would come back to the same few columns in every row)."""
    if numel <= sample:
        return 1
    step = numel // sample
    return step if step % 2 else max(step - 1, 1)


class UpdateSample:
    """The samples of one list of same-device tensors and their snapshot from before a step.

    Args:
        tensors: The parameters (their sizes and device fix the sample).
        sample: Elements kept per tensor (:data:`SAMPLE_ELEMENTS` by default).
    """

    def __init__(self, tensors: list[Tensor], sample: int = SAMPLE_ELEMENTS) -> None:
        self._strides = [stride_of(t.numel(), sample) for t in tensors]
        self._counts = [min(t.numel(), sample) for t in tensors]
        self.elements = sum(self._counts)
        device = tensors[0].device
        # Row 0: the sample before the step; row 1: after it, then the change. One buffer, so
        # that the sums of both rows are one segmented reduction.
        self._pair = torch.zeros(2, self.elements, dtype=torch.float32, device=device)
        self._before_views = list(self._pair[0].split(self._counts))
        self._after_views = list(self._pair[1].split(self._counts))
        # Each tensor's first sampled element, and the end, for both rows: offsets built here on
        # the host, so the segmented sum needs no check that would read them back (a CUDA sync).
        counts = torch.tensor(self._counts, dtype=torch.int64)
        offsets = torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)])
        self._offsets = to_device(offsets.expand(2, -1).contiguous(), device)
        self._key: tuple[int, ...] = ()
        self._sources: list[Tensor] = []

    @property
    def nbytes(self) -> int:
        """Device memory the sample keeps."""
        return self._pair.numel() * 4

    def _runs(self, tensors: list[Tensor]) -> list[Tensor]:
        """Views of the sampled elements of ``tensors`` (cached while their storage stays)."""
        key = tuple(t.data_ptr() for t in tensors)
        if key == self._key:
            return self._sources
        sources = []
        for tensor, stride, count in zip(tensors, self._strides, self._counts, strict=True):
            # A view where the tensor is contiguous (parameters are); else a copy, made again
            # at every use (never cached: it would not follow the tensor).
            flat = tensor.detach().reshape(-1)
            sources.append(flat[::stride][:count])
        if all(t.is_contiguous() for t in tensors):
            self._key, self._sources = key, sources
        return sources

    def snapshot(self, tensors: list[Tensor], fused: bool = True) -> None:
        """Copy (and upcast) the sampled elements of ``tensors`` as they are before the step."""
        with torch.no_grad():
            _foreach.copy_(self._before_views, self._runs(tensors), fused=fused)

    def ratio(self, tensors: list[Tensor], fused: bool = True) -> Tensor:
        """Per tensor, ``‖after − before‖ / ‖before‖`` over the sample, float32; NaN where the
        sampled weights were all zero and did not move, ``inf`` where they moved from zero."""
        with torch.no_grad():
            _foreach.copy_(self._after_views, self._runs(tensors), fused=fused)
            pair = self._pair
            torch.sub(pair[0], pair[1], out=pair[1])  # the change, b − a
            # Float32 sums: their rounding (~1e-6 relative over 8,192 squares) is far below the
            # sampling error, and the due step stays a handful of launches.
            sums = torch.segment_reduce(pair.square_(), "sum", offsets=self._offsets, axis=1,
                                        unsafe=True)  # fmt: skip
            ratio: Tensor = sums[1].div(sums[0]).sqrt_()
            return ratio
