"""Exact full-parameter statistics from the statistics of each rank's local shards.

Every rank computes the per-layer statistics of its own pieces (:mod:`trickscope.stats`, as for
any tensor); this module turns them into mergeable partials and merges them. Per parameter and
rank the partials are the element count ``n``, ``Σx² = norm²``, ``Σx = mean·n``, ``M2 =
std²·(n − 1)``, the zero, NaN and ±Inf counts, ``max |x|``, and for the update ratio
``‖Δ‖ = ratio·‖w_before‖`` with ``‖w_before‖``, and the units (rows along dim 0) counted and
those whose gradient is all zero (dead units), and the elements of Adam's ``v̂`` above zero and
those of them below ``eps²`` (eps dominance). The merge is the parallel formula
``M2 = Σ M2ᵣ + Σ nᵣ (meanᵣ − mean)²`` (no cancellation), sums for the rest, and a maximum for
``max |x|``, in float64. A rank whose piece is not its own (a replica, or an empty shard) counts
zero elements and adds nothing.

Histograms need edges every rank agrees on before it bins: :func:`local_range` gives a rank's
finite min and max, the ranks reduce them, :func:`agreed_edges` widens them as ``torch.histc``
does, and :func:`local_counts` bins with ``trickscope.stats.histograms``' float32 arithmetic, so
that the summed counts equal those of the whole tensor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from trickscope import stats
from trickscope.segments import to_device

# Columns of a rank's table, one row per watched parameter.
GRAD_COUNT = 0
GRAD_FIRST = 1  # stats.GRAD_STATS follow, in their order
WEIGHT_COUNT = GRAD_FIRST + len(stats.GRAD_STATS)
WEIGHT_FIRST = WEIGHT_COUNT + 1  # stats.WEIGHT_STATS follow
UPDATE_COUNT = WEIGHT_FIRST + len(stats.WEIGHT_STATS)
UPDATE_RATIO = UPDATE_COUNT + 1
BEFORE_NORM = UPDATE_RATIO + 1
# Dead units: the rank's output units (rows along dim 0) counted, and those whose gradient is
# all zero; summed over the ranks where no row is split between them.
UNITS = BEFORE_NORM + 1
DEAD_UNITS = UNITS + 1
# Eps dominance: the rank's elements with v̂ > 0, and those of them where eps > √v̂.
EPS_POSITIVE = DEAD_UNITS + 1
EPS_DOMINATED = EPS_POSITIVE + 1
COLUMNS = EPS_DOMINATED + 1

_COLUMN_OF = {
    **{stat: GRAD_FIRST + i for i, stat in enumerate(stats.GRAD_STATS)},
    **{stat: WEIGHT_FIRST + i for i, stat in enumerate(stats.WEIGHT_STATS)},
    stats.UPDATE_STAT: UPDATE_RATIO,
}


@dataclass(frozen=True)
class Plan:
    """Where each statistic of one rank's emitted vector goes in its table, and where each
    merged value comes from (built once per list of keys)."""

    key_index: Tensor  # positions in the emitted vector of per-parameter statistics
    slot_index: Tensor  # their places in the flattened (parameters, COLUMNS) table
    counts: Tensor  # the table's count columns, (parameters, COLUMNS), zeros elsewhere
    total_index: int  # position of grad_norm/total in the vector, or -1
    total_params: Tensor  # parameters whose gradient norm the total takes
    grad_rows: list[int]  # the same, on the host


def plan(
    keys: list[str], names: dict[str, int], numels: list[int], own: list[bool], device: torch.device
) -> Plan:
    """The :class:`Plan` for ``keys``: ``names`` maps a parameter name to its row, ``numels``
    are the local element counts, ``own`` says which rows are this rank's to count."""
    key_index: list[int] = []
    slot_index: list[int] = []
    counts = torch.zeros(len(numels), COLUMNS, dtype=torch.float64)
    total_index = -1
    grads: list[int] = []
    for position, key in enumerate(keys):
        if key == stats.TOTAL_GRAD_NORM:
            total_index = position
            continue
        stat, _, name = key.partition("/")
        row = names.get(name)
        column = _COLUMN_OF.get(stat)
        if row is None or column is None:
            continue  # passed through as this rank has it (the learning rate, the AMP scale)
        key_index.append(position)
        slot_index.append(row * COLUMNS + column)
        count = float(numels[row]) if own[row] else 0.0
        if stat == stats.GRAD_STATS[0]:
            counts[row, GRAD_COUNT] = count
            grads.append(row)
        elif stat == stats.WEIGHT_STATS[0]:
            counts[row, WEIGHT_COUNT] = count
        elif stat == stats.UPDATE_STAT:
            counts[row, UPDATE_COUNT] = count

    def index(values: list[int]) -> Tensor:
        return to_device(torch.tensor(values, dtype=torch.int64), device)

    return Plan(
        index(key_index),
        index(slot_index),
        to_device(counts, device),
        total_index,
        index(grads),
        grads,
    )


def table(the_plan: Plan, values: Tensor, before_norms: Tensor | None) -> Tensor:
    """This rank's ``(parameters, COLUMNS)`` float64 table from its emitted ``values``."""
    out = the_plan.counts.clone()
    picked = values.index_select(0, the_plan.key_index).to(torch.float64)
    out.view(-1).index_copy_(0, the_plan.slot_index, picked)
    if before_norms is not None:
        out[:, BEFORE_NORM] = before_norms.to(out.device, torch.float64)
    return out


def merge(tables: Tensor) -> Tensor:
    """Merged statistics from every rank's table, ``(ranks, parameters, COLUMNS)``: per
    parameter the columns of :data:`_COLUMN_OF` in table order (count columns left 0), the
    norm before the update in ``BEFORE_NORM``, the units and the dead-unit fraction, the
    elements of ``v̂`` above zero and the eps-dominated fraction of them."""
    out = torch.zeros_like(tables[0])
    grad = _merge_moments(tables, GRAD_COUNT, GRAD_FIRST, GRAD_FIRST + 2, GRAD_FIRST + 3)
    n, norm, mean, std = grad
    count = tables[:, :, GRAD_COUNT]
    own = count > 0
    first = GRAD_FIRST
    out[:, first] = norm
    out[:, first + 1] = torch.where(own, tables[:, :, first + 1], 0.0).amax(0)
    out[:, first + 2] = mean
    out[:, first + 3] = std
    # The rank's zero fraction times its count is an integer (exact below 2²⁴ elements a shard).
    zeros = torch.where(own, (tables[:, :, first + 4] * count).round(), 0.0).sum(0)
    out[:, first + 4] = zeros / n
    out[:, first + 5] = torch.where(own, tables[:, :, first + 5], 0.0).sum(0)
    out[:, first + 6] = torch.where(own, tables[:, :, first + 6], 0.0).sum(0)
    _, w_norm, w_mean, w_std = _merge_moments(
        tables, WEIGHT_COUNT, WEIGHT_FIRST, WEIGHT_FIRST + 1, WEIGHT_FIRST + 2
    )
    out[:, WEIGHT_FIRST] = w_norm
    out[:, WEIGHT_FIRST + 1] = w_mean
    out[:, WEIGHT_FIRST + 2] = w_std
    own_update = tables[:, :, UPDATE_COUNT] > 0
    before = tables[:, :, BEFORE_NORM]
    step = torch.where(own_update, tables[:, :, UPDATE_RATIO] * before, 0.0)
    before = torch.where(own_update, before, 0.0)
    out[:, UPDATE_RATIO] = step.square().sum(0).sqrt() / before.square().sum(0).sqrt()
    # The whole weights' norms before the update, from the ranks' own pieces.
    own_weight = tables[:, :, WEIGHT_COUNT] > 0
    before_all = torch.where(own_weight, tables[:, :, BEFORE_NORM], 0.0)
    out[:, BEFORE_NORM] = before_all.square().sum(0).sqrt()
    # Each rank counts only its own units (zeros elsewhere): the sums are the whole parameter's.
    out[:, UNITS] = tables[:, :, UNITS].sum(0)
    out[:, DEAD_UNITS] = tables[:, :, DEAD_UNITS].sum(0) / out[:, UNITS]
    out[:, EPS_POSITIVE] = tables[:, :, EPS_POSITIVE].sum(0)
    out[:, EPS_DOMINATED] = tables[:, :, EPS_DOMINATED].sum(0) / out[:, EPS_POSITIVE].clamp_min(1)
    return out


def _merge_moments(
    tables: Tensor, count_column: int, norm_column: int, mean_column: int, std_column: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Count, L2 norm, mean and unbiased std of the whole parameter from the ranks' own."""
    count = tables[:, :, count_column]
    own = count > 0
    n = count.sum(0)
    norm = torch.where(own, tables[:, :, norm_column], 0.0).square().sum(0).sqrt()
    rank_mean = tables[:, :, mean_column]
    mean = torch.where(own, rank_mean * count, 0.0).sum(0) / n
    rank_std = tables[:, :, std_column]
    m2 = torch.where(count > 1, rank_std.square() * (count - 1.0), 0.0).sum(0)
    m2 = m2 + torch.where(own, count * (rank_mean - mean).square(), 0.0).sum(0)
    # As Tensor.std: NaN for fewer than two elements, and wherever the mean is not finite.
    std = torch.where(n > 1, (m2 / (n - 1.0)).sqrt(), math.nan) + mean * 0.0
    return n, norm, mean, std


def merged_values(the_plan: Plan, values: Tensor, merged: Tensor) -> Tensor:
    """``values`` (one rank's emitted vector) with its per-parameter statistics replaced by the
    merged ones, and ``grad_norm/total`` recomputed from them; float32."""
    out = values.to(torch.float32).clone()
    picked = merged.reshape(-1).index_select(0, the_plan.slot_index).to(torch.float32)
    out.index_copy_(0, the_plan.key_index, picked)
    if the_plan.total_index >= 0:
        norms = merged[:, GRAD_FIRST].index_select(0, the_plan.total_params)
        out[the_plan.total_index] = torch.linalg.vector_norm(norms).to(torch.float32)
    return out


def local_range(tensors: list[Tensor]) -> Tensor:
    """Per tensor the finite ``[min, −max]`` as ``(len, 2)`` float32 (``+inf`` both for a tensor
    without finite values), so that one MIN reduction across ranks gives the common range."""
    inf = math.inf
    rows = []
    for tensor in tensors:
        x = tensor.detach().to(torch.float32).reshape(-1)
        if x.numel() == 0:
            rows.append(torch.full((2,), inf, device=x.device))
            continue
        low = torch.nan_to_num(x, nan=inf, posinf=inf, neginf=inf).amin()
        high = torch.nan_to_num(x, nan=-inf, posinf=-inf, neginf=-inf).amax()
        rows.append(torch.stack([low, -high]))
    return torch.stack(rows)


def agreed_edges(ranges: Tensor) -> tuple[Tensor, Tensor]:
    """``lo`` and ``hi`` from the reduced :func:`local_range`: ``[0, 0]`` without finite values,
    then widened by 1 either side where they coincide (as ``torch.histc``)."""
    lo, hi = ranges[:, 0], -ranges[:, 1]
    empty = lo > hi
    lo = torch.where(empty, 0.0, lo)
    hi = torch.where(empty, 0.0, hi)
    same = lo == hi
    return torch.where(same, lo - 1.0, lo), torch.where(same, hi + 1.0, hi)


def local_counts(tensors: list[Tensor], lo: Tensor, hi: Tensor, bins: int) -> Tensor:
    """Per tensor, ``bins`` counts over ``[lo, hi]`` and then the NaN/±Inf count, float64,
    ``(len, bins + 1)``; the arithmetic of ``trickscope.stats.histograms``."""
    width = hi - lo
    rows = []
    for index, tensor in enumerate(tensors):
        x = tensor.detach().to(torch.float32).reshape(-1)
        position = (x - lo[index]) * bins / width[index]
        position = position.nan_to_num(nan=-1.0, posinf=-1.0, neginf=-1.0).clamp(max=bins - 1)
        slots = position.to(torch.int64).remainder(bins + 1)
        # Not bincount: on CUDA it reads the largest slot back to the host to size its output.
        row = torch.zeros(bins + 1, dtype=torch.float64, device=x.device)
        rows.append(row.scatter_add_(0, slots, torch.ones_like(slots, dtype=torch.float64)))
    return torch.stack(rows)
