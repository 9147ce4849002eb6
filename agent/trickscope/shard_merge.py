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
zero elements and adds nothing. Beside them each rank says, per family of statistics, whether
its share is in its table (``*_DONE``), and the merge sums those flags too: a rank whose
statistics failed also adds zeros, and only these counts tell its missing share from an empty
one (:func:`complete`).

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
# Whether the rank's share of each family of a row's statistics is in its table: 1 where it
# computed it, or where it holds nothing of the parameter (not its own to count, or an empty
# shard: it legitimately adds nothing); 0 where its statistics failed. Summed over the ranks,
# a statistic is complete where the sum is the world size; elsewhere the merge lacks a share
# and its value is not reported (:func:`complete`).
GRAD_DONE = EPS_DOMINATED + 1
WEIGHT_DONE = GRAD_DONE + 1
UPDATE_DONE = WEIGHT_DONE + 1  # the update ratio, which needs BEFORE_NORM too
BEFORE_DONE = UPDATE_DONE + 1
UNITS_DONE = BEFORE_DONE + 1
EPS_DONE = UNITS_DONE + 1
DONES = EPS_DONE - GRAD_DONE + 1
COLUMNS = EPS_DONE + 1

_DONE_OF = {
    **{stat: GRAD_DONE for stat in stats.GRAD_STATS},
    **{stat: WEIGHT_DONE for stat in stats.WEIGHT_STATS},
    stats.UPDATE_STAT: UPDATE_DONE,
}

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
    idle: Tensor  # 1.0 for the rows of which this rank holds nothing, (parameters,) float64
    # Per merged per-parameter value: its position in the emitted vector, its row, and the
    # DONE column that says whether every rank's share is in it.
    needs: list[tuple[int, int, int]]


def plan(
    keys: list[str], names: dict[str, int], numels: list[int], own: list[bool], device: torch.device
) -> Plan:
    """The :class:`Plan` for ``keys``: ``names`` maps a parameter name to its row, ``numels``
    are the local element counts, ``own`` says which rows are this rank's to count."""
    key_index: list[int] = []
    slot_index: list[int] = []
    counts = torch.zeros(len(numels), COLUMNS, dtype=torch.float64)
    idle = [0.0 if own[row] and numels[row] > 0 else 1.0 for row in range(len(numels))]
    counts[:, GRAD_DONE:] = torch.tensor(idle, dtype=torch.float64)[:, None]
    total_index = -1
    grads: list[int] = []
    needs: list[tuple[int, int, int]] = []
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
        done = _DONE_OF[stat]
        counts[row, done] = 1.0  # computed here (a failure leaves no table at all)
        needs.append((position, row, done))
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
        to_device(torch.tensor(idle, dtype=torch.float64), device),
        needs,
    )


def table(the_plan: Plan, values: Tensor, before_norms: Tensor | None) -> Tensor:
    """This rank's ``(parameters, COLUMNS)`` float64 table from its emitted ``values``."""
    out = the_plan.counts.clone()
    picked = values.index_select(0, the_plan.key_index).to(torch.float64)
    out.view(-1).index_copy_(0, the_plan.slot_index, picked)
    if before_norms is not None:
        out[:, BEFORE_NORM] = before_norms.to(out.device, torch.float64)
        out[:, BEFORE_DONE] = 1.0
    else:  # the pre-step hook failed: the update ratio lacks its denominator here
        out[:, UPDATE_DONE].mul_(the_plan.idle)
    return out


# The merge in three parts, each a sum (or a maximum) over the ranks, so that it can be done by
# reductions as well as from gathered tables: the sums, then the spreads about the whole
# parameter's means (which need the summed counts and sums), then the maxima.
_N, _SQUARES, _SUM = 0, 1, 2  # gradient: count, Σx², Σx, then zeros, NaN, ±Inf
_ZEROS, _NAN, _INF = 3, 4, 5
_W_N, _W_SQUARES, _W_SUM = 6, 7, 8  # weight: count, Σx², Σx
_STEP, _BEFORE, _BEFORE_ALL = 9, 10, 11  # ‖Δ‖², ‖w_before‖² (of the updated), ‖w_before‖²
_UNITS, _DEAD, _EPS_POSITIVE, _EPS_DOMINATED = 12, 13, 14, 15
_DONE = 16  # then the DONES columns, as in the table
SUMS = _DONE + DONES


def partial_sums(table: Tensor) -> Tensor:
    """A rank's table (or tables, ``(..., parameters, COLUMNS)``) as the ``SUMS`` columns of
    partial sums whose totals over the ranks give the merge (zeros where not its own)."""
    count = table[..., GRAD_COUNT]
    own = count > 0
    w_count = table[..., WEIGHT_COUNT]
    own_weight = w_count > 0
    own_update = table[..., UPDATE_COUNT] > 0
    before = table[..., BEFORE_NORM]
    zero = torch.zeros((), dtype=table.dtype, device=table.device)

    def mine(flag: Tensor, values: Tensor) -> Tensor:
        return torch.where(flag, values, zero)

    columns = [
        count,
        mine(own, table[..., GRAD_FIRST]).square(),
        mine(own, table[..., GRAD_FIRST + 2] * count),
        # The rank's zero fraction times its count is an integer (exact below 2²⁴ elements).
        mine(own, (table[..., GRAD_FIRST + 4] * count).round()),
        mine(own, table[..., GRAD_FIRST + 5]),
        mine(own, table[..., GRAD_FIRST + 6]),
        w_count,
        mine(own_weight, table[..., WEIGHT_FIRST]).square(),
        mine(own_weight, table[..., WEIGHT_FIRST + 1] * w_count),
        mine(own_update, table[..., UPDATE_RATIO] * before).square(),
        mine(own_update, before).square(),
        mine(own_weight, before).square(),
        table[..., UNITS],
        table[..., DEAD_UNITS],
        table[..., EPS_POSITIVE],
        table[..., EPS_DOMINATED],
    ]
    return torch.cat([torch.stack(columns, dim=-1), table[..., GRAD_DONE:]], dim=-1)


def means(sums: Tensor) -> Tensor:
    """The whole parameters' gradient and weight means from the summed partials,
    ``(parameters, 2)``."""
    return torch.stack([sums[:, _SUM] / sums[:, _N], sums[:, _W_SUM] / sums[:, _W_N]], dim=1)


def spreads(table: Tensor, whole_means: Tensor) -> Tensor:
    """A rank's (or ranks') share of the gradient's and weight's M2 about the whole
    parameter's means: ``M2ᵣ + nᵣ (meanᵣ − mean)²`` (the parallel formula: no cancellation),
    ``(..., parameters, 2)``."""
    out = []
    for column, (count_column, mean_column, std_column) in enumerate(
        (
            (GRAD_COUNT, GRAD_FIRST + 2, GRAD_FIRST + 3),
            (WEIGHT_COUNT, WEIGHT_FIRST + 1, WEIGHT_FIRST + 2),
        )
    ):
        count = table[..., count_column]
        within = torch.where(count > 1, table[..., std_column].square() * (count - 1.0), 0.0)
        apart = count * (table[..., mean_column] - whole_means[:, column]).square()
        out.append(within + torch.where(count > 0, apart, 0.0))
    return torch.stack(out, dim=-1)


def maxima(table: Tensor) -> Tensor:
    """A rank's (or ranks') gradient max |x| where its own, else 0, ``(..., parameters)``."""
    return torch.where(table[..., GRAD_COUNT] > 0, table[..., GRAD_FIRST + 1], 0.0)


def finish(sums: Tensor, spread: Tensor, largest: Tensor) -> Tensor:
    """The merged table (see :func:`merge`) from the totals over the ranks of
    :func:`partial_sums`, :func:`spreads` and the maximum of :func:`maxima`."""
    out = torch.zeros(sums.shape[0], COLUMNS, dtype=torch.float64, device=sums.device)
    mean = means(sums)
    for column, (n, squares, first) in enumerate(
        ((_N, _SQUARES, GRAD_FIRST), (_W_N, _W_SQUARES, WEIGHT_FIRST))
    ):
        count = sums[:, n]
        # As Tensor.std: NaN for fewer than two elements, and wherever the mean is not finite.
        std = torch.where(count > 1, (spread[:, column] / (count - 1.0)).sqrt(), math.nan)
        std = std + mean[:, column] * 0.0
        out[:, first] = sums[:, squares].sqrt()
        at = first + (2 if column == 0 else 1)
        out[:, at] = mean[:, column]
        out[:, at + 1] = std
    nan = sums[:, _NAN]
    # A maximum may have dropped a NaN on the way (a reduction's order): the count says.
    out[:, GRAD_FIRST + 1] = torch.where(nan > 0, math.nan, largest)
    out[:, GRAD_FIRST + 4] = sums[:, _ZEROS] / sums[:, _N]
    out[:, GRAD_FIRST + 5] = nan
    out[:, GRAD_FIRST + 6] = sums[:, _INF]
    out[:, UPDATE_RATIO] = sums[:, _STEP].sqrt() / sums[:, _BEFORE].sqrt()
    out[:, BEFORE_NORM] = sums[:, _BEFORE_ALL].sqrt()
    out[:, UNITS] = sums[:, _UNITS]
    out[:, DEAD_UNITS] = sums[:, _DEAD] / sums[:, _UNITS]
    out[:, EPS_POSITIVE] = sums[:, _EPS_POSITIVE]
    out[:, EPS_DOMINATED] = sums[:, _EPS_DOMINATED] / sums[:, _EPS_POSITIVE].clamp_min(1)
    out[:, GRAD_DONE:] = sums[:, _DONE:]
    return out


def merge(tables: Tensor) -> Tensor:
    """Merged statistics from every rank's table, ``(ranks, parameters, COLUMNS)``: per
    parameter the columns of :data:`_COLUMN_OF` in table order (count columns left 0), the
    norm before the update in ``BEFORE_NORM``, the units and the dead-unit fraction, the
    elements of ``v̂`` above zero and the eps-dominated fraction of them, and in the DONE
    columns how many ranks' shares each family of statistics holds."""
    sums = partial_sums(tables).sum(0)
    return finish(sums, spreads(tables, means(sums)).sum(0), maxima(tables).amax(0))


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


def done_counts(merged: Tensor) -> Tensor:
    """The merged DONE columns (ranks whose share each family of each row holds) as one float32
    vector, ``(parameters × DONES,)``: what the host reads to drop incomplete statistics."""
    return merged[:, GRAD_DONE:].reshape(-1).to(torch.float32)


def complete(counts: list[float], world: int, row: int, column: int) -> bool:
    """Whether every one of ``world`` ranks' share of the DONE ``column`` of ``row`` is in the
    merge, from :func:`done_counts` read on the host."""
    return counts[row * DONES + column - GRAD_DONE] >= world


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
