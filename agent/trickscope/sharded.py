"""Per-layer statistics of sharded parameters (FSDP2's ``fully_shard``, any DTensor).

A DTensor's norm is a collective: computed on rank 0 alone it hangs, or reports rank 0's shard.
Here every rank computes the statistics of its local pieces (``to_local()``, the gradients'
likewise) with the ordinary per-tensor code, on its device, and at each due optimizer step every
rank takes part in one ``gather`` to rank 0 of a small table of partials (25 float64 per
parameter, :mod:`trickscope.shard_merge`) on the default process group (from
:data:`REDUCE_FROM_RANKS` ranks, reductions of the same partials instead); rank 0 merges them
into the exact statistics of the whole parameters and emits them under the unsharded module's
names.
Histograms take two more small collectives on their steps: the common finite range, then the
counts binned over it. The same table carries each rank's output units (rows along dim 0) and
how many of them have an all-zero gradient, summed into ``grad_dead_units/<param>`` where no
row is split between ranks (:func:`rows_whole`), Adam's ``v̂`` elements above zero and those
under ``eps²`` (``opt/eps_dominance/<param>``, every ``EPS_EVERY``-th due step), and the local
weight norms from before the update; rank 0 hands the merged table to its listeners (the
diagnosis: the first non-finite weight or gradient, the pre-clip norm).

Which rank counts a piece: a DTensor's shards each count once; a dimension of the mesh on
which it is replicated counts on its first coordinate only; a plain tensor (a module left out
of ``fully_shard``) counts on rank 0, whose value it reports, as under DDP.

Every rank issues the same collectives in the same order, from the optimizer step hook: the
watcher runs on every rank (:func:`rejoin` gives the per-rank summary, which every rank keeps,
the hooks of a watcher its run did not keep), and a due step whose statistics failed on one
rank still joins the collective with an empty table, so that no rank waits for another. Each
table says which of its statistics it holds (a failed rank: only those of parameters of which it
holds nothing, whose share is empty anyway), and the merge sums those flags: rank 0 reads them
on the host (a pinned copy read once its event completes, :class:`~trickscope.probes.ring.Ring`)
and reports no value that lacks a rank's share, counting an incident instead, since a partial
norm, mean or count would pass for the whole parameter's.

A collective without partners would pair with the training's own (and abort it): before the
first one, every rank's watcher says through the process group's store that its hooks run, and
where one does not, none of them issues any.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from trickscope import _foreach, distributed, setup, shard_merge, stats
from trickscope.dtensors import counts_here, is_dtensor, local, rows_whole
from trickscope.probes import due
from trickscope.probes.ring import Ring
from trickscope.segments import to_device
from trickscope.watch import EmitHist, Watcher, _Layout

# From this many ranks the merge goes by reductions (an all-reduce of SUMS float64 per tensor,
# then two reductions to rank 0 of 3 per tensor: sizes that do not grow with the ranks) instead
# of one gather, which brings rank 0 COLUMNS float64 per tensor from every rank (61 MB per due
# step at 1,024 ranks and 300 tensors). On 2 ranks (gloo, CPU) the gather's one collective
# takes 3-5 ms against the reductions' 10-11 ms (bench/sharded_merge.py); the crossover at many
# ranks is not measured here: 64 bounds rank 0's share at ~13 kB per tensor.
REDUCE_FROM_RANKS = 64

HANDSHAKE_TIMEOUT = timedelta(seconds=30)
"""How long the first due step waits for every rank's watcher to say it is running."""

# The n-th sharded watcher of this process pairs with the n-th of every other rank.
_generations = itertools.count()

# The latest sharded watcher built for each optimizer, for :func:`rejoin`.
_latest: weakref.WeakKeyDictionary[torch.optim.Optimizer, ShardedWatcher] = (
    weakref.WeakKeyDictionary()
)


@dataclass
class _Scalars:
    """A due step's merged statistics on rank 0, waiting for its DONE counts on the host."""

    step: int
    keys: list[str]
    values: Tensor
    host: list[tuple[str, float]]
    merged: Tensor
    plan: shard_merge.Plan
    needs: _Needs


@dataclass
class _Hists:
    """A due step's merged histograms on rank 0, waiting for their DONE counts."""

    step: int
    keys: list[str]
    block: Tensor


@dataclass(frozen=True)
class _Needs:
    """What the values of one list of keys rest on: per merged value (position in the vector)
    its row and DONE column; ``checked``, the same as positions in ``done_counts``."""

    values: list[tuple[int, int, int]]
    checked: list[int]


def _stand_in(param: Tensor) -> Tensor:
    """A plain tensor that shares ``param``'s local storage, with the local gradient as its
    ``grad``: what the statistics read in place of a DTensor parameter."""
    if not is_dtensor(param):
        return param
    piece = local(param)
    grad = param.grad
    if grad is not None:
        piece.grad = local(grad)
    return piece


def _norms(tensors: list[Tensor], device: torch.device) -> Tensor:
    """Each tensor's L2 norm, float32, as one vector on ``device`` (empty tensors: 0)."""
    out: list[Tensor] = [torch.zeros((), device=device)] * len(tensors)
    for members in _foreach.group_by_device_dtype(tensors).values():
        group = [tensors[i] for i in members]
        for i, norm in zip(members, _foreach.norm(group, dtype=torch.float32), strict=True):
            out[i] = norm.to(device, non_blocking=True)
    return torch.stack(out)


def _collective_device(device: torch.device) -> torch.device:
    """Where the merge's collectives run: the parameters' device, or the current CUDA device
    for parameters on the host (CPU offload) under a backend without a CPU transport (NCCL)."""
    backend = str(torch.distributed.get_backend())
    if device.type == "cpu" and "gloo" not in backend and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return device


class ShardedWatcher(Watcher):
    """A :class:`~trickscope.watch.Watcher` for a model with DTensor parameters: it runs on
    every rank, computes the statistics of the local shards and merges them (rank 0 emits)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, **kwargs: Any) -> None:
        dist = torch.distributed
        self._rank = dist.get_rank()
        self._world = dist.get_world_size()
        self._primary = self._rank == 0
        self._emit_merged = kwargs["emit"]
        self._emit_hist_merged: EmitHist | None = kwargs.get("emit_hist")
        kwargs["emit"] = self._gather_scalars
        if not self._primary:
            kwargs["emit_host"] = None  # rank 0 reports the learning rates
        super().__init__(model, optimizer, **kwargs)
        self._shards = list(self._params)  # the DTensor (and plain) parameters themselves
        self._rows = {name: row for row, name in enumerate(self.names)}
        self._device = _collective_device(local(self._shards[0]).device)
        self._own = [counts_here(param, self._rank) for param in self._shards]
        # Rows of which this rank holds nothing (not its own to count, or an empty shard): its
        # share of them is complete even when its statistics fail.
        self._idle = [
            not own or local(param).numel() == 0
            for own, param in zip(self._own, self._shards, strict=True)
        ]
        self._idle_rows: Tensor | None = None
        # Rank 0's merged values wait here until their DONE counts are on the host.
        self._ring = Ring()
        self._in_flight = 0
        self._needs: dict[tuple[str, ...], _Needs] = {}
        # Parameters whose dead units merge exactly: ≥2-D, and no row split between ranks (a
        # row-wise tensor-parallel weight, sharded on dim 1, would need every row's max across
        # ranks: a collective the size of its rows, not reported).
        self._unit_rows = [
            row
            for row, param in enumerate(self._shards)
            if param.ndim >= 2 and param.shape[0] > 0 and rows_whole(param)
        ]
        self._unit_index: dict[tuple[int, ...], Tensor] = {}
        # Eps dominance on every EPS_EVERY-th due step, as the unsharded diagnosis: the ranks
        # count due steps alike (every rank's post hook runs on each).
        self._adam = setup.optimizer_family(optimizer) == "adam"
        self._dues = 0
        self._param_rows = {id(param): row for row, param in enumerate(self._shards)}
        # Called on rank 0 with each due step's merged table (trickscope.diagnose listens).
        self.listeners: list[Callable[[int, Tensor, shard_merge.Plan], None]] = []
        self._plans: dict[tuple[str, ...], shard_merge.Plan] = {}
        self._before: Tensor | None = None
        self._gathered = False
        self._binned = False
        self._generation = next(_generations)
        self._announced = False
        self._everyone: bool | None = None  # whether every rank runs its hooks (None: unknown)
        _latest[optimizer] = self

    def close(self) -> None:
        """Remove the hooks, and report what still waits for its counts (rank 0)."""
        super().close()
        try:
            if self._in_flight and torch.cuda.is_available():
                torch.cuda.synchronize()  # closing may wait; the hooks never do
            self._release()
        except Exception as exc:
            self._incidents.error("sharded statistics", exc)

    def _localise(self) -> None:
        self._params = [_stand_in(param) for param in self._shards]

    def _key(self, rank: int) -> str:
        return f"trickscope/sharded/{self._generation}/{rank}"

    def _signature(self) -> str:
        """What the ranks must share for their tables to line up: the parameters' names."""
        return hashlib.sha256("\n".join(self.names).encode()).hexdigest()

    def _announce(self) -> None:
        """Say in the process group's store that this rank's hooks run (its first step), and
        on which parameters."""
        self._announced = True
        store = distributed._default_store()
        if store is not None:
            store.set(self._key(self._rank), self._signature())

    def _all_ranks_watch(self) -> bool:
        """Whether every rank runs its hooks on the same parameters, so that the collectives
        have partners of the same size: a job that watches on rank 0 alone, or whose ranks hold
        different layers (pipeline stages), would otherwise pair the merge with the training's
        own collectives. Asked once, through the store (no collective); every rank reads the
        same values, so all decide alike."""
        if self._everyone is None:
            store = distributed._default_store()
            keys = [self._key(rank) for rank in range(self._world)]
            try:
                if store is not None:
                    store.wait(keys, HANDSHAKE_TIMEOUT)
                    signatures = {store.get(key).decode() for key in keys}
                    if signatures != {self._signature()}:
                        raise RuntimeError("the ranks watch different parameters")
                self._everyone = True
            except Exception as exc:
                self._everyone = False
                error = RuntimeError(
                    "not every rank runs watch() on this sharded model, so the shards' "
                    f"statistics cannot be merged and are not reported ({exc})"
                )
                self._incidents.error("sharded statistics", error, traceback=False)
        return self._everyone

    def _pre(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if not self._announced:
            self._announce()
        if self._in_flight:
            try:
                self._release()
            except Exception as exc:
                self._incidents.error("sharded statistics", exc)
        if self._everyone is False:  # nothing is merged: only count the step, as the base does
            self.step = self._next
            return
        if self._next == self._due:
            try:
                self._localise()
                self._before = None
                # The weights' norms before the update: the update ratio's denominator, and the
                # merged norms the diagnosis checks for non-finite weights.
                if self._next == self._due_scalars:
                    with torch.no_grad():
                        self._before = _norms(self._params, self._params[0].device)
            except Exception as exc:
                self._incidents.error("watch pre-step hook", exc)
        super()._pre(optimizer, args, kwargs)

    def _post(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        step = self.step
        scalars = step == self._due_scalars
        hist = step == self._due_hist
        self._gathered = self._binned = False
        self._dues += scalars
        if (scalars or hist) and not self._all_ranks_watch():
            self._pending = None  # nothing to compute: the base hook only moves the cadence on
            scalars = hist = False
        elif scalars or hist:
            try:
                self._localise()
            except Exception as exc:
                self._incidents.error("watch post-step hook", exc)
        super()._post(optimizer, args, kwargs)
        # Whatever failed on this rank, it joins the collectives the other ranks issue.
        try:
            if scalars and not self._gathered:
                self._gather(None)
            if hist and not self._binned:
                self._bin([], [], self._bins)
        except Exception as exc:
            self._incidents.error("sharded statistics", exc)
        # The stand-ins hold this step's local gradients: let zero_grad() free them.
        self._params = list(self._shards)
        self._before = None

    def _gather_scalars(
        self, step: int, keys: Any, values: Tensor, host: list[tuple[str, float]]
    ) -> None:
        key_list = list(keys)
        the_plan = self._plans.get(tuple(key_list))
        if the_plan is None:
            numels = [param.numel() for param in self._params]
            the_plan = shard_merge.plan(key_list, self._rows, numels, self._own, values.device)
            self._plans[tuple(key_list)] = the_plan
        table = shard_merge.table(the_plan, values, self._before)
        units = [row for row in self._unit_rows if self._params[row].grad is not None]
        if units:
            self._count_units(table, units)
        eps = self._count_eps(table) if self._adam and (self._dues - 1) % due.EPS_EVERY == 0 else []
        merged = self._gather(table)
        if merged is None or not self._primary:
            return
        out = shard_merge.merged_values(the_plan, values, merged)
        extra = [
            (f"grad_dead_units/{self.names[row]}", row, shard_merge.DEAD_UNITS) for row in units
        ]
        extra += [(f"opt/eps_dominance/{self.names[row]}", row, shard_merge.EPS_DOMINATED)
                  for row in eps]  # fmt: skip
        base = len(key_list)
        if extra:
            key_list += [key for key, _, _ in extra]
            slots = [row * shard_merge.COLUMNS + column for _, row, column in extra]
            picked = merged.reshape(-1).index_select(0, self._index(slots).to(merged.device))
            out = torch.cat([out, picked.to(out.device, torch.float32)])
        needs = self._needs_of(key_list, the_plan, [(base + i, row, column)
                               for i, (_, row, column) in enumerate(extra)])  # fmt: skip
        waiting = _Scalars(step, key_list, out, host, merged, the_plan, needs)
        self._hold(waiting, shard_merge.done_counts(merged))

    def _needs_of(
        self, keys: list[str], the_plan: shard_merge.Plan, extra: list[tuple[int, int, int]]
    ) -> _Needs:
        """What the values of ``keys`` rest on (cached per list of keys): the plan's merged
        statistics, the total gradient norm (every gradient norm it takes), and the dead units
        and eps dominance of ``extra`` (their value columns, mapped to their DONE columns)."""
        cached = self._needs.get(tuple(keys))
        if cached is not None:
            return cached
        done_of = {shard_merge.DEAD_UNITS: shard_merge.UNITS_DONE,
                   shard_merge.EPS_DOMINATED: shard_merge.EPS_DONE}  # fmt: skip
        values = list(the_plan.needs)
        values += [(position, row, done_of[column]) for position, row, column in extra]
        if the_plan.total_index >= 0:
            values += [(the_plan.total_index, row, shard_merge.GRAD_DONE)
                       for row in the_plan.grad_rows]  # fmt: skip
        checked = sorted(
            {row * shard_merge.DONES + column - shard_merge.GRAD_DONE for _, row, column in values}
        )
        needs = self._needs[tuple(keys)] = _Needs(values, checked)
        return needs

    def _hold(self, waiting: _Scalars | _Hists, counts: Tensor) -> None:
        """Start moving ``counts`` (the merged DONE counts) to the host; ``waiting`` is reported
        once they are there: at once on the CPU, at a later hook (or ``close``) on CUDA."""
        if self._ring.ship(counts, waiting):
            self._in_flight += 1
        else:
            self._incidents.thin("all sharded merge checks in flight")
        self._release()

    def _release(self) -> None:
        """Report what waited and whose counts are on the host, without what lacks a share."""
        for waiting, counts in self._ring.poll():
            self._in_flight -= 1
            if isinstance(waiting, _Scalars):
                self._release_scalars(waiting, counts)
            else:
                self._release_hists(waiting, counts)

    def _release_scalars(self, waiting: _Scalars, counts: list[float]) -> None:
        world = self._world
        needs = waiting.needs
        step, keys, values = waiting.step, waiting.keys, waiting.values
        if not all(counts[at] >= world for at in needs.checked):
            missing = {
                position
                for position, row, column in needs.values
                if not shard_merge.complete(counts, world, row, column)
            }
            kept = [position for position in range(len(keys)) if position not in missing]
            self._incomplete(step, len(missing), len(keys), "statistics")
            keys = [keys[position] for position in kept]
            index = torch.tensor(kept, dtype=torch.int64)
            values = values.index_select(0, to_device(index, values.device))
        if keys:
            self._emit_merged(step, keys, values, waiting.host)
        elif waiting.host and self._emit_host is not None:  # the learning rates still go
            self._emit_host(step, waiting.host)
        # The diagnosis reads every gradient norm and every norm before the update.
        the_plan = waiting.plan
        whole = all(
            shard_merge.complete(counts, world, row, shard_merge.GRAD_DONE)
            for row in the_plan.grad_rows
        ) and all(
            shard_merge.complete(counts, world, row, shard_merge.BEFORE_DONE)
            for row in range(len(self._shards))
        )
        if whole:
            for listener in self.listeners:
                listener(step, waiting.merged, the_plan)

    def _release_hists(self, waiting: _Hists, counts: list[float]) -> None:
        keys, block = waiting.keys, waiting.block
        kept = [index for index, count in enumerate(counts) if count >= self._world]
        if len(kept) < len(keys):
            self._incomplete(waiting.step, len(keys) - len(kept), len(keys), "histograms")
            rows = block.view(len(keys), -1)
            block = rows.index_select(0, to_device(torch.tensor(kept), block.device))
            keys = [keys[index] for index in kept]
        if keys and self._emit_hist_merged is not None:
            self._emit_hist_merged(waiting.step, keys, self._bins, block.reshape(-1))

    def _incomplete(self, step: int, missing: int, total: int, what: str) -> None:
        """Count a due step whose merge lacked some rank's share of ``missing`` values."""
        error = RuntimeError(
            f"step {step}: {missing} of {total} merged {what} lacked some rank's share (a "
            "rank's statistics failed: see its log) and were not reported"
        )
        self._incidents.error("sharded statistics incomplete", error, traceback=False)

    def _index(self, rows: list[int]) -> Tensor:
        """``rows`` as an index tensor on the collective's device (cached per list)."""
        key = tuple(rows)
        index = self._unit_index.get(key)
        if index is None:
            tensor = torch.tensor(rows, dtype=torch.int64)
            index = self._unit_index[key] = to_device(tensor, self._device)
        return index

    def _count_eps(self, table: Tensor) -> list[int]:
        """This rank's eps-dominance counts into its table (its own pieces; zeros elsewhere);
        the rows of every parameter with Adam state, which all ranks have alike."""
        counts = due.eps_counts(self._optimizer, self._param_rows, local)
        rows = sorted(counts)
        mine = [row for row in rows if self._own[row]]
        if mine:
            here = table.device
            index = self._index(mine).to(here)
            for column, which in ((shard_merge.EPS_POSITIVE, 0), (shard_merge.EPS_DOMINATED, 1)):
                values = torch.stack([counts[row][which].to(here) for row in mine])
                table[:, column].index_copy_(0, index, values.to(torch.float64))
            table[:, shard_merge.EPS_DONE].index_fill_(0, index, 1.0)
        return rows

    def _count_units(self, table: Tensor, units: list[int]) -> None:
        """This rank's units (local rows along dim 0) and dead units of the parameters
        ``units`` into its table, where they are its own to count (zeros elsewhere)."""
        mine = [row for row in units if self._own[row]]
        if not mine:
            return
        local_rows = [float(self._params[row].shape[0]) for row in mine]
        dead = [due.dead_rows(self._params[row].grad) for row in mine]  # type: ignore[arg-type]
        here = table.device
        index = self._index(mine).to(here)
        table[:, shard_merge.UNITS].index_copy_(
            0, index, to_device(torch.tensor(local_rows, dtype=torch.float64), here)
        )
        counts = torch.stack([count.to(here) for count in dead]).to(torch.float64)
        table[:, shard_merge.DEAD_UNITS].index_copy_(0, index, counts)
        table[:, shard_merge.UNITS_DONE].index_fill_(0, index, 1.0)

    def _gather(self, table: Tensor | None) -> Tensor | None:
        """Every rank's table (an empty one where this rank has none) gathered on rank 0, which
        merges them; ``None`` elsewhere. Only rank 0 reports, so only it receives: the other
        ranks send their table and get nothing back."""
        self._gathered = True
        rows = len(self._shards)
        device = self._device
        if table is None:  # counts of zero: this rank adds nothing, and says it lacks its share
            mine = torch.zeros(rows, shard_merge.COLUMNS, dtype=torch.float64, device=device)
            if self._idle_rows is None:
                idle = torch.tensor(self._idle, dtype=torch.float64)
                self._idle_rows = to_device(idle, device)
            mine[:, shard_merge.GRAD_DONE :] = self._idle_rows[:, None]
        else:
            mine = table.to(device, non_blocking=True)
        if self._world >= REDUCE_FROM_RANKS:
            merged = self._reduce(mine)
        else:
            everyone = [torch.empty_like(mine) for _ in range(self._world)]
            torch.distributed.gather(mine, everyone if self._primary else None, dst=0)
            merged = shard_merge.merge(torch.stack(everyone)) if self._primary else None
        if table is None or merged is None:
            return None
        return merged.to(table.device)

    def _reduce(self, mine: Tensor) -> Tensor | None:
        """The merge by reductions: what rank 0 receives does not grow with the ranks. The
        partial sums go to every rank (each needs the whole parameters' means), then the
        spreads about those means and the maxima to rank 0, which merges; ``None`` elsewhere."""
        dist = torch.distributed
        sums = shard_merge.partial_sums(mine)
        dist.all_reduce(sums)
        spread = shard_merge.spreads(mine, shard_merge.means(sums))
        largest = shard_merge.maxima(mine)
        dist.reduce(spread, dst=0)
        dist.reduce(largest, dst=0, op=dist.ReduceOp.MAX)
        return shard_merge.finish(sums, spread, largest) if self._primary else None

    def _report_hist(self, layout: _Layout, grad_scale: Tensor | None) -> None:
        keys: list[str] = []
        tensors: list[Tensor] = []
        rows: list[int] = []
        for row, (name, param) in enumerate(zip(self.names, self._params, strict=True)):
            if param.grad is not None:
                keys.append(f"{stats.GRAD_HIST}/{name}")
                tensors.append(param.grad)
                rows.append(row)
        grads = len(tensors)
        for row, (name, param) in enumerate(zip(self.names, self._params, strict=True)):
            keys.append(f"{stats.WEIGHT_HIST}/{name}")
            tensors.append(param)
            rows.append(len(self._params) + row)
        binned = self._bin(tensors, rows, self._bins)
        if binned is None or not self._primary or self._emit_hist_merged is None:
            return
        block, done = binned
        if isinstance(grad_scale, Tensor) and grads:
            edges = block[:grads, :2] / grad_scale.to(block.device, torch.float64)
            block = torch.cat([torch.cat([edges, block[:grads, 2:]], 1), block[grads:]])
        self._hold(_Hists(self.step, keys, block), done.to(torch.float32))

    def _bin(
        self, tensors: list[Tensor], rows: list[int], bins: int
    ) -> tuple[Tensor, Tensor] | None:
        """Histograms of ``tensors`` (table ``rows``: gradients first, then weights) merged over
        the ranks, as ``stats.histograms`` lays them out, and per histogram how many ranks'
        counts it holds; ``None`` without tensors here.

        Both collectives run whatever fails on this rank (which then adds nothing and says so),
        so that the other ranks never wait for it; the failure is raised after them."""
        self._binned = True
        dist = torch.distributed
        params = len(self._shards)
        device = self._device
        ranges = torch.full((2 * params, 2), math.inf, device=device)
        # Per row: the bins, the NaN/±Inf count, then 1 where this rank's counts are in (or it
        # holds nothing of the tensor), summed over the ranks as the counts are.
        counts = torch.zeros(2 * params, bins + 2, dtype=torch.float64, device=device)
        mine = [tensors[i] for i, row in enumerate(rows) if self._own[row % params]]
        own_rows = [row for row in rows if self._own[row % params]]
        done = [row for row in range(2 * params) if self._idle[row % params]]
        index = to_device(torch.tensor(own_rows, dtype=torch.int64), device)
        failure: Exception | None = None
        try:
            if mine:
                ranges[index] = shard_merge.local_range(mine).to(device)
        except Exception as exc:
            failure = exc
        dist.all_reduce(ranges, op=dist.ReduceOp.MIN)
        lo, hi = shard_merge.agreed_edges(ranges)
        try:
            if mine and failure is None:
                here = mine[0].device
                low, high = lo[index].to(here), hi[index].to(here)
                counts[index, : bins + 1] = shard_merge.local_counts(mine, low, high, bins).to(
                    device
                )
            if failure is None:
                done += own_rows
        except Exception as exc:
            failure = exc
        if done:
            counts[to_device(torch.tensor(done, dtype=torch.int64), device), bins + 1] = 1.0
        dist.all_reduce(counts)
        if failure is not None:
            raise failure
        if not tensors:
            return None
        wanted = to_device(torch.tensor(rows, dtype=torch.int64), device)
        block = torch.cat(
            [
                lo.double()[wanted, None],
                hi.double()[wanted, None],
                counts[wanted, bins : bins + 1],
                counts[wanted, :bins],
            ],
            dim=1,
        )
        return block, counts[wanted, bins + 1]


def watcher_of(optimizer: torch.optim.Optimizer) -> ShardedWatcher | None:
    """The sharded watcher last built for ``optimizer``, or ``None``."""
    return _latest.get(optimizer)


def rejoin(optimizer: torch.optim.Optimizer) -> list[RemovableHandle]:
    """The hooks of the sharded watcher last built for ``optimizer``, registered again: on a
    rank whose run keeps no watcher, so that it still takes part in the merge. Empty where the
    optimizer has no sharded watcher."""
    watcher = _latest.get(optimizer)
    if watcher is None:
        return []
    return [
        optimizer.register_step_pre_hook(watcher._pre),
        optimizer.register_step_post_hook(watcher._post),
    ]
