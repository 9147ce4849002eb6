"""The statistics and the histogram of one tensor larger than the scratch buffer, read a piece
at a time: its temporaries stay of a piece's size whatever the tensor's, where a load into the
buffer would copy it whole. ``trickscope.stats`` cuts such a tensor into :func:`pieces` of the
buffer's size, takes their statistics through its usual paths and merges them
(:func:`merge_pieces`); :func:`moments` reads chunks itself, for a piece that would not fit.

The results are those of :mod:`trickscope.stats` for the same tensor: the scalar statistics in
the order of ``GRAD_STATS`` or ``WEIGHT_STATS``, float32, accumulated in float64 (the std by the
pairwise merge of each chunk's own mean and squared deviations, Chan et al. 1979, so without the
cancellation of ``Σx² − n·mean²``); the histogram a row of ``stats.histograms`` with the same
float32 binning arithmetic, so the same counts. Device ops only: the element counts are known
on the host, nothing is read back.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# Elements per chunk (4 MiB of float32): small against the scratch buffer, large enough that a
# chunk's dozen ops are not dominated by their launch.
CHUNK = 1 << 20


def pieces(tensor: Tensor, chunk: int | None = None) -> list[Tensor]:
    """Views of ``tensor`` that cover it in order, each of about ``chunk`` elements or fewer:
    runs of its flat layout where it is contiguous, else slices along its first dimension (a
    channels-last weight, a transposed view), so that nothing copies it whole (``chunk``:
    :data:`CHUNK` by default)."""
    chunk = chunk or CHUNK
    flat = tensor.detach()
    if flat.numel() == 0:
        return []
    if flat.is_contiguous() or flat.dim() < 2:
        return list(flat.reshape(-1).split(chunk))
    per_slice = flat.numel() // flat.shape[0]
    return list(flat.split(max(1, chunk // per_slice), dim=0))


def moments(tensor: Tensor, *, counts: bool, chunk: int | None = None) -> Tensor:
    """``stats.GRAD_STATS`` of ``tensor`` (``counts``) or ``stats.WEIGHT_STATS``, float32, shape
    ``(7,)`` or ``(3,)``: L2 norm, [max |x|], mean, unbiased std, [zero fraction, NaN and ±Inf
    counts]."""
    f64 = torch.float64
    zero = torch.zeros((), dtype=f64, device=tensor.device)
    squares = total = m2 = nonzero = nan = inf = largest = zero
    seen = 0  # elements so far: a host count, so the merge weights cost no read-back
    with torch.no_grad():
        for piece in pieces(tensor, chunk):
            x = piece.to(f64)
            size = x.numel()
            piece_sum = x.sum()
            piece_mean = piece_sum / size
            deviation = (x - piece_mean).square_().sum()
            if seen:
                # Chan's merge: M2 += M2ₖ + (meanₖ − mean)² · n·k / (n + k).
                apart = piece_mean - total / seen
                deviation = deviation + apart.square() * (seen * size / (seen + size))
            m2 = m2 + deviation
            total = total + piece_sum
            flat = x.reshape(-1)
            squares = squares + torch.dot(flat, flat)  # no temporary; never writes x (it may
            # be the tensor itself, where it is float64)
            seen += size
            if counts:
                nonzero = nonzero + torch.count_nonzero(piece)
                nan = nan + piece.isnan().sum()
                inf = inf + piece.isinf().sum()
                # A NaN propagates through amax and maximum, as max |x| of the tensor says.
                largest = torch.maximum(largest, piece.abs().amax().to(f64))
        mean = total / seen if seen else torch.full_like(zero, math.nan)
        std = (m2 / (seen - 1)).sqrt() if seen > 1 else torch.full_like(zero, math.nan)
        std = std + mean * 0.0  # NaN wherever the mean is not finite, as Tensor.std gives
        norm = squares.sqrt()
        if not counts:
            return torch.stack([norm, mean, std]).to(torch.float32)
        zero_frac = (seen - nonzero) / seen if seen else torch.full_like(zero, math.nan)
        columns = [norm, largest, mean, std, zero_frac, nan, inf]
        return torch.stack([c.to(f64) for c in columns]).to(torch.float32)


def merge_pieces(block: Tensor, sizes: list[int], *, counts: bool) -> Tensor:
    """One tensor's statistics from those of its pieces (``block``: one column per piece, rows
    as ``stats.GRAD_STATS`` with ``counts``, else ``stats.WEIGHT_STATS``; ``sizes``: the
    pieces' elements), float32, in float64 arithmetic: sums of counts and squares, the mean of
    the sums, M2 by the parallel formula ``Σ M2ₚ + Σ nₚ (meanₚ − mean)²``, the largest max."""
    f64 = torch.float64
    values = block.to(f64)
    n = torch.tensor(sizes, dtype=f64, device=block.device)
    total = float(sum(sizes))
    mean_row, std_row = (2, 3) if counts else (1, 2)
    norm = values[0].square().sum().sqrt()
    piece_mean = values[mean_row]
    mean = (piece_mean * n).sum() / total
    within = torch.where(n > 1, values[std_row].square() * (n - 1.0), 0.0).sum()
    m2 = within + (n * (piece_mean - mean).square()).sum()
    std = (m2 / (total - 1.0)).sqrt() if total > 1 else torch.full_like(mean, math.nan)
    std = std + mean * 0.0  # NaN wherever the mean is not finite, as Tensor.std gives
    if not counts:
        return torch.stack([norm, mean, std]).to(torch.float32)
    largest = values[1].amax()  # NaN propagates, as max |x| of the tensor says
    zeros = (values[4] * n).round().sum()  # each piece's zero count is an integer
    nan, inf = values[5].sum(), values[6].sum()
    return torch.stack([norm, largest, mean, std, zeros / total, nan, inf]).to(torch.float32)


def binned_range(lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """The range binned for finite minima ``lo`` and maxima ``hi``: ``[0, 0]`` widened when there
    was no finite element (``lo > hi``), and a single value widened by 1 each way, as
    ``torch.histc`` does, so that the bins have a width."""
    empty = lo > hi
    lo = torch.where(empty, 0.0, lo)
    hi = torch.where(empty, 0.0, hi)
    same = lo == hi
    return torch.where(same, lo - 1.0, lo), torch.where(same, hi + 1.0, hi)


def histogram(tensor: Tensor, bins: int, chunk: int | None = None) -> Tensor:
    """The histogram of one tensor, as a row of ``trickscope.stats.histograms`` (shape
    ``(1, bins + 3)``): the same two passes (the finite range, then the bins) and the same
    arithmetic, over :func:`pieces` of the tensor."""
    with torch.no_grad():
        parts = pieces(tensor, chunk)
        device, inf = tensor.device, math.inf
        lo = torch.full((), inf, device=device)
        hi = torch.full((), -inf, device=device)
        for part in parts:
            values = part.to(torch.float32)
            lo = torch.minimum(lo, torch.nan_to_num(values, nan=inf, neginf=inf).amin())
            hi = torch.maximum(hi, torch.nan_to_num(values, nan=-inf, posinf=-inf).amax())
        lo, hi = binned_range(lo, hi)
        width = hi - lo
        counts = torch.zeros(bins + 1, dtype=torch.float64, device=device)
        for part in parts:
            position = (part.to(torch.float32) - lo) * bins / width
            position.nan_to_num_(nan=-1.0, posinf=-1.0, neginf=-1.0).clamp_(max=bins - 1)
            index = position.to(torch.int64).remainder_(bins + 1).reshape(-1)
            ones = torch.ones(1, dtype=torch.float64, device=device).expand(index.shape)
            counts.scatter_add_(0, index, ones)
        head = torch.stack([lo.double(), hi.double(), counts[bins]])
        return torch.cat([head, counts[:bins]])[None, :]
