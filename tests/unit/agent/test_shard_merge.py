"""Statistics of a tensor cut into shards, computed per shard and merged, equal those of the whole
tensor: the merge that sharded (FSDP2, DTensor) parameters go through, in one process."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from tests.stats_reference import assert_close, reference_grad, reference_weight
from trickscope import shard_merge, stats
from trickscope.probes import due


def cut(tensor: Tensor, bounds: list[int]) -> list[Tensor]:
    """``tensor`` flattened and cut at ``bounds`` (empty pieces allowed), as shards are."""
    flat = tensor.reshape(-1)
    edges = [0, *bounds, flat.numel()]
    return [flat[a:b].clone() for a, b in zip(edges, edges[1:], strict=False)]


def whole_tensors() -> list[Tensor]:
    torch.manual_seed(0)
    specials = torch.randn(40)
    specials[3] = math.nan
    with_inf = torch.randn(30)
    with_inf[29] = math.inf
    return [
        torch.randn(50) * 1e-3,
        torch.randn(64) + 1000.0,  # a mean that dominates the spread
        specials,
        with_inf,
        torch.tensor([0.0, 0.0, 1.5, 0.0, -2.0, 0.0]),
        torch.tensor([2.5]),
    ]


# Where each tensor is cut for three ranks: empty shards, one-element shards, uneven shards.
BOUNDS = [[10, 10], [1, 40], [20, 39], [5, 30], [3, 6], [0, 1]]
RANKS = 3


def rank_tables(wholes: list[Tensor], befores: list[Tensor]) -> tuple[Tensor, list[str], Tensor]:
    """The merged values of each rank's table, from the statistics of its shards as a watcher
    emits them; the keys; the tables."""
    names = {f"p{i}": i for i in range(len(wholes))}
    tables = []
    for rank in range(RANKS):
        grads = [cut(t, b)[rank] for t, b in zip(wholes, BOUNDS, strict=True)]
        old = [cut(t, b)[rank] for t, b in zip(befores, BOUNDS, strict=True)]
        keys = [f"{stat}/p{i}" for stat in stats.GRAD_STATS for i in range(len(wholes))]
        keys += [f"{stat}/p{i}" for stat in stats.WEIGHT_STATS for i in range(len(wholes))]
        keys += [f"{stats.UPDATE_STAT}/p{i}" for i in range(len(wholes))]
        keys += [stats.TOTAL_GRAD_NORM, "lr/group0"]
        n = stats.numels(grads)
        ratios = torch.stack(
            [
                torch.linalg.vector_norm(b - a) / torch.linalg.vector_norm(b)
                for a, b in zip(grads, old, strict=True)
            ]
        )
        values = torch.cat(
            [
                stats.grad_stats(grads, n, fused=False).reshape(-1),
                stats.weight_stats(grads, n, fused=False).reshape(-1),
                ratios,
                torch.tensor([123.0, 0.1]),
            ]
        )
        numels = [g.numel() for g in grads]
        plan = shard_merge.plan(keys, names, numels, [True] * len(wholes), torch.device("cpu"))
        before_norms = torch.stack([torch.linalg.vector_norm(b) for b in old])
        tables.append(shard_merge.table(plan, values, before_norms))
        if rank == 0:
            first_plan, first_values = plan, values
    merged = shard_merge.merge(torch.stack(tables))
    return shard_merge.merged_values(first_plan, first_values, merged), keys, torch.stack(tables)


def test_merged_shard_statistics_equal_the_whole_tensors() -> None:
    wholes = whole_tensors()
    befores = [t * 0.9 + 0.01 for t in wholes]
    values, keys, _ = rank_tables(wholes, befores)
    by_key = dict(zip(keys, values.tolist(), strict=True))
    for i, whole in enumerate(wholes):
        grad = [by_key[f"{stat}/p{i}"] for stat in stats.GRAD_STATS]
        assert_close(grad, reference_grad(whole), f"grad statistics of tensor {i}")
        weight = [by_key[f"{stat}/p{i}"] for stat in stats.WEIGHT_STATS]
        assert_close(weight, reference_weight(whole), f"weight statistics of tensor {i}")
        ratio = torch.linalg.vector_norm(befores[i] - whole) / torch.linalg.vector_norm(befores[i])
        assert_close([by_key[f"{stats.UPDATE_STAT}/p{i}"]], [ratio.item()], f"ratio {i}")
    norms = torch.tensor([reference_grad(t)[0] for t in wholes])
    assert_close([by_key[stats.TOTAL_GRAD_NORM]], [torch.linalg.vector_norm(norms).item()], "total")
    assert by_key["lr/group0"] == torch.tensor(0.1).item()  # passed through as rank 0 has it


def test_histograms_over_agreed_edges_sum_to_the_whole_tensors() -> None:
    wholes = whole_tensors()
    pieces = [
        [cut(t, b)[rank] for t, b in zip(wholes, BOUNDS, strict=True)] for rank in range(RANKS)
    ]
    ranges = torch.stack([shard_merge.local_range(shards) for shards in pieces]).amin(0)
    lo, hi = shard_merge.agreed_edges(ranges)
    counts = sum(shard_merge.local_counts(shards, lo, hi, stats.BINS) for shards in pieces)
    want = stats.histograms(wholes, stats.BINS, fused=False)
    assert torch.equal(lo.double(), want[:, 0]) and torch.equal(hi.double(), want[:, 1])
    assert torch.equal(counts[:, stats.BINS], want[:, 2])  # NaN and ±Inf
    assert torch.equal(counts[:, : stats.BINS], want[:, 3:])


def test_dead_units_and_norms_before_the_update_merge_by_sums() -> None:
    """A gradient sharded by rows (FSDP2's dim 0, one rank's shard empty, one rank a replica
    that does not count): the dead units merge to the whole gradient's, and the weights' norms
    from before the update to the whole weights'."""
    torch.manual_seed(2)
    grad = torch.randn(7, 5)
    grad[[0, 3, 4]] = 0.0
    weight = torch.randn(7, 5)
    shards = [(0, 4), (4, 4), (4, 7)]  # rows per rank: rank 1's shard is empty
    keys = [f"{stat}/p0" for stat in (*stats.GRAD_STATS, *stats.WEIGHT_STATS)]
    tables = []
    for rank, (start, stop) in enumerate([*shards, (0, 7)]):
        own = rank < len(shards)  # the last rank holds a replica: it counts nothing
        piece, weights = grad[start:stop], weight[start:stop]
        n = stats.numels([piece])
        values = torch.cat(
            [
                stats.grad_stats([piece], n, fused=False).reshape(-1),
                stats.weight_stats([piece], n, fused=False).reshape(-1),
            ]
        )
        plan = shard_merge.plan(keys, {"p0": 0}, [piece.numel()], [own], torch.device("cpu"))
        table = shard_merge.table(plan, values, torch.linalg.vector_norm(weights).reshape(1))
        if own:
            table[0, shard_merge.UNITS] = float(stop - start)
            table[0, shard_merge.DEAD_UNITS] = due.dead_rows(piece)
        tables.append(table)
    merged = shard_merge.merge(torch.stack(tables))[0]
    assert merged[shard_merge.UNITS].item() == 7.0
    (_, whole), = due.dead_units(["p0"], [grad_of(grad)])  # fmt: skip
    assert merged[shard_merge.DEAD_UNITS].item() == pytest.approx(whole.item())
    assert whole.item() == pytest.approx(3 / 7)
    assert merged[shard_merge.BEFORE_NORM].item() == pytest.approx(weight.norm().item())


def grad_of(grad: Tensor) -> Tensor:
    """A parameter whose gradient is ``grad``."""
    param = torch.zeros_like(grad, requires_grad=True)
    param.grad = grad
    return param


def test_eps_counts_give_the_eps_dominance_fraction() -> None:
    """Per parameter, the dominated share of the v̂ > 0 elements, counted a chunk at a time,
    is the diagnosis' fraction; a parameter left out of ``rows`` is not counted."""
    torch.manual_seed(4)
    params = [torch.nn.Parameter(torch.randn(300, 7)), torch.nn.Parameter(torch.randn(5))]
    optimizer = torch.optim.Adam(params, lr=0.01, eps=0.3)
    for _ in range(2):
        params[0].grad = torch.randn(300, 7) * (torch.rand(300, 7) > 0.3)  # zeros: v̂ = 0
        params[1].grad = torch.randn(5)
        optimizer.step()
    ids = {id(params[0]): "a", id(params[1]): "b"}
    fractions = dict(due.eps_fractions(optimizer, ids))
    counts = due.eps_counts(optimizer, {id(params[0]): 4}, lambda t: t)
    assert list(counts) == [4]
    positive, dominated = counts[4]
    assert 0 < dominated < positive < 2100
    assert (dominated / positive).item() == pytest.approx(fractions["opt/eps_dominance/a"].item())


def test_the_merge_by_reductions_equals_the_merge_of_gathered_tables() -> None:
    """Summed partials, then spreads about the whole means, then maxima, each reduced rank by
    rank in any order (a max reduction may drop a NaN: the count puts it back)."""
    wholes = whole_tensors()
    _, _, tables = rank_tables(wholes, [t * 0.9 + 0.01 for t in wholes])
    gathered = shard_merge.merge(tables)
    order = [2, 0, 1]
    sums = sum(shard_merge.partial_sums(tables[rank]) for rank in order)
    spread = sum(shard_merge.spreads(tables[rank], shard_merge.means(sums)) for rank in order)
    maxima = [shard_merge.maxima(tables[rank]) for rank in order]
    largest = torch.stack([torch.where(m.isnan(), 0.0, m) for m in maxima])
    reduced = shard_merge.finish(sums, spread, largest.amax(0))
    torch.testing.assert_close(reduced, gathered, equal_nan=True, rtol=1e-12, atol=0)


def test_the_merge_counts_the_ranks_whose_share_it_holds() -> None:
    """A rank whose statistics failed joins with an empty table that holds only its empty
    shares: the statistics of the tensors it holds a piece of lack a share (by the gather's
    merge and by reductions alike), those of which it holds nothing do not."""
    wholes = whole_tensors()
    _, _, tables = rank_tables(wholes, [t * 0.9 + 0.01 for t in wholes])
    families = (shard_merge.GRAD_DONE, shard_merge.WEIGHT_DONE, shard_merge.UPDATE_DONE,
                shard_merge.BEFORE_DONE)  # fmt: skip

    def complete(merged: Tensor) -> list[list[bool]]:
        counts = shard_merge.done_counts(merged).tolist()
        return [
            [shard_merge.complete(counts, RANKS, row, column) for column in families]
            for row in range(len(wholes))
        ]

    assert complete(shard_merge.merge(tables)) == [[True] * 4] * len(wholes)
    empty_on_rank_1 = [b[1] == b[0] for b in BOUNDS]
    assert empty_on_rank_1 == [True, False, False, False, False, False]
    failed = torch.zeros_like(tables[1])
    failed[:, shard_merge.GRAD_DONE :] = torch.tensor(empty_on_rank_1, dtype=torch.float64)[:, None]
    tables[1] = failed
    want = [[empty] * 4 for empty in empty_on_rank_1]
    assert complete(shard_merge.merge(tables)) == want
    sums = shard_merge.partial_sums(tables).sum(0)
    spread = shard_merge.spreads(tables, shard_merge.means(sums)).sum(0)
    reduced = shard_merge.finish(sums, spread, shard_merge.maxima(tables).amax(0))
    assert complete(reduced) == want


def test_a_plan_marks_what_a_rank_holds_nothing_of_as_complete() -> None:
    """Without a gradient here, a parameter's gradient statistics are missing where this rank
    holds a piece of it, not where its piece is empty or not its own to count; the update ratio
    also needs the norms from before the update."""
    keys = [f"{stat}/p{i}" for stat in stats.WEIGHT_STATS for i in range(3)]
    keys += [f"{stats.UPDATE_STAT}/p{i}" for i in range(3)]
    names = {f"p{i}": i for i in range(3)}
    plan = shard_merge.plan(keys, names, [4, 0, 4], [True, True, False], torch.device("cpu"))
    values = torch.ones(len(keys))
    table = shard_merge.table(plan, values, torch.ones(3))
    assert table[:, shard_merge.GRAD_DONE].tolist() == [0.0, 1.0, 1.0]
    assert table[:, shard_merge.WEIGHT_DONE].tolist() == [1.0, 1.0, 1.0]
    assert table[:, shard_merge.UPDATE_DONE].tolist() == [1.0, 1.0, 1.0]
    without_before = shard_merge.table(plan, values, None)
    assert without_before[:, shard_merge.UPDATE_DONE].tolist() == [0.0, 1.0, 1.0]
    assert without_before[:, shard_merge.BEFORE_DONE].tolist() == [0.0, 1.0, 1.0]
