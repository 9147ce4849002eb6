"""One rank of a real FSDP2 (``fully_shard``, gloo, CPU) job, checked against the same model
unsharded.

``test_sharded.py`` starts one process per rank, as ``torchrun`` would. Every rank feeds the same
batches, so that the sharded model's averaged gradients equal those of one unsharded copy fed the
same batches: the per-layer statistics and histograms of the two must agree. The script checks:

* ``full``: every module sharded (the last layer's single output row leaves rank 1 an empty
  shard), statistics and histograms every step;
* ``partial``: only the first layer sharded, the others plain tensors;
* ``accumulation``: two micro-batches under ``set_requires_gradient_sync(False)``, then one
  that synchronises, before each step;
* named on the command line instead: ``tensor-parallel``, ``ColwiseParallel`` and
  ``RowwiseParallel`` layers, whose DTensor parameters are sharded on either dimension or
  replicated; ``hybrid``, HSDP on a 2-D mesh (replicated on one dimension, sharded on the other);
* a rank whose statistics (or its pre-step hook) fail at one step still joins the collectives,
  and rank 0 reports, at that step, none of the values lacking its share, the others exactly;
* a rank that does not watch (its watcher closed), or watches other parameter names, leaves
  rank 0 reporting nothing, not hanging;
* ``reduce`` on the command line: all of the above with the merge by reductions;
* ``run``: ``trickscope.init`` and ``run.watch`` on the sharded model, reporting to the server
  in ``TRICKSCOPE_URL`` (only rank 0 keeps a watcher there; the others join the merge through
  their per-rank summary); rank 0 prints its unsharded reference for the test to compare.

The last line on stdout is one JSON object: ``{"rank", "checked", "mismatches", "reference",
"run_id"}``.
"""

from __future__ import annotations

import copy
import faulthandler
import json
import math
import os
import sys
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, NoReturn

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

import trickscope
from trickscope import sharded, stats
from trickscope._incidents import Incidents
from trickscope.diagnose import Diagnoser
from trickscope.probes import due
from trickscope.sharded import ShardedWatcher
from trickscope.watch import Watcher

STEPS = 3
RUN_STEPS = 3


class Recorder:
    """What a watcher emits, by step: statistics ``{key: value}`` and histograms
    ``{key: [lo, hi, non-finite, counts...]}``."""

    def __init__(self) -> None:
        self.scalars: dict[int, dict[str, float]] = {}
        self.hists: dict[int, dict[str, list[float]]] = {}

    def emit(self, step: int, keys: Sequence[str], values: Tensor, host: Any) -> None:
        self.scalars.setdefault(step, {}).update(zip(keys, values.tolist(), strict=True))

    def emit_hist(self, step: int, keys: Sequence[str], bins: int, values: Tensor) -> None:
        rows = values.view(len(keys), bins + 3).tolist()
        self.hists.setdefault(step, {}).update(zip(keys, rows, strict=True))


def model_pair(shard: str) -> tuple[nn.Module, nn.Module]:
    """The model to shard and an unsharded copy with the same weights."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3), nn.ReLU(), nn.Linear(3, 1))
    reference = copy.deepcopy(model)
    if shard == "tensor-parallel":
        mesh = init_device_mesh("cpu", (dist.get_world_size(),))
        plan = {"0": ColwiseParallel(), "2": RowwiseParallel()}
        parallelize_module(model, mesh, plan)  # type: ignore[arg-type]
    elif shard == "hybrid":  # HSDP: replicated across the first mesh dimension, sharded across
        mesh = init_device_mesh("cpu", (dist.get_world_size(), 1), mesh_dim_names=("dp", "fsdp"))
        fully_shard(model[0], mesh=mesh)
        fully_shard(model, mesh=mesh)
    elif shard == "partial":
        fully_shard(model[0])
    else:
        fully_shard(model[0])
        fully_shard(model[2])
        fully_shard(model)
    return model, reference


def adam(model: nn.Module) -> torch.optim.Optimizer:
    # eps of the gradients' order: eps dominates some elements, not none.
    return torch.optim.Adam(model.parameters(), lr=0.01, eps=1e-2)


def watched(model: nn.Module, record: Recorder) -> tuple[Watcher, torch.optim.Optimizer]:
    optimizer = adam(model)
    watcher = Watcher(model, optimizer, every=1, start_step=0, emit=record.emit,
                      incidents=Incidents(), hist_every=1, emit_hist=record.emit_hist)  # fmt: skip
    return watcher, optimizer


def batches(step: int, count: int) -> list[tuple[Tensor, Tensor]]:
    generator = torch.Generator().manual_seed(100 + step)
    return [(torch.randn(4, 8, generator=generator), torch.randn(4, 1, generator=generator))
            for _ in range(count)]  # fmt: skip


def train(model: nn.Module, optimizer: torch.optim.Optimizer, step: int, accumulate: bool) -> None:
    micro = batches(step, 3 if accumulate else 1)
    for index, (x, y) in enumerate(micro):
        if accumulate and hasattr(model, "set_requires_gradient_sync"):
            model.set_requires_gradient_sync(index == len(micro) - 1)
        F.mse_loss(model(x), y).backward()
    optimizer.step()
    optimizer.zero_grad()


def close(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-6)


def compare(case: str, got: Recorder, want: Recorder, mismatches: list[str]) -> int:
    """Compare rank 0's merged output with the reference; returns the values checked."""
    checked = 0
    if sorted(got.scalars) != sorted(want.scalars) or sorted(got.hists) != sorted(want.hists):
        mismatches.append(f"{case}: steps {sorted(got.scalars)} != {sorted(want.scalars)}")
        return 0
    for step, expected in want.scalars.items():
        actual = got.scalars[step]
        if set(actual) != set(expected):
            mismatches.append(f"{case} step {step}: keys {set(actual) ^ set(expected)}")
        for key in set(actual) & set(expected):
            checked += 1
            if not close(actual[key], expected[key]):
                mismatches.append(f"{case} step {step} {key}: {actual[key]} != {expected[key]}")
    for step, expected_hists in want.hists.items():
        actual_hists = got.hists[step]
        if set(actual_hists) != set(expected_hists):
            mismatches.append(f"{case} step {step}: hist keys differ")
        for key in set(actual_hists) & set(expected_hists):
            checked += 1
            a, e = actual_hists[key], expected_hists[key]
            # An element on a bin's edge may fall either side of it when the gradients differ
            # in the last bit (tensor parallel sums in another order): one may move one bin.
            moved = sum(abs(x - y) for x, y in zip(a[2:], e[2:], strict=True))
            edges = close(a[0], e[0]) and close(a[1], e[1])
            if not edges or sum(a[2:]) != sum(e[2:]) or moved > 2:
                mismatches.append(f"{case} step {step} {key}: {a} != {e}")
    return checked


def record_diagnosis(watcher: Watcher, optimizer: torch.optim.Optimizer, names: set[str],
                     record: Recorder) -> None:  # fmt: skip
    """After each step, the dead units of ``names`` and, every ``EPS_EVERY`` steps, the eps
    dominance, as the unsharded diagnosis computes them."""
    ids = {id(param): name for name, param in zip(watcher.names, watcher._params, strict=True)}

    def hook(*args: Any) -> None:
        values = due.dead_units(watcher.names, watcher._params)
        kept = {key: float(v) for key, v in values if key.partition("/")[2] in names}
        if watcher.step % due.EPS_EVERY == 0:
            kept.update((key, float(v)) for key, v in due.eps_fractions(optimizer, ids))
        record.scalars.setdefault(watcher.step, {}).update(kept)

    optimizer.register_step_post_hook(hook)


def check(case: str, mismatches: list[str]) -> int:
    model, reference = model_pair(case)
    got, want = Recorder(), Recorder()
    watcher, optimizer = watched(model, got)
    if not isinstance(watcher, ShardedWatcher):
        mismatches.append(f"{case}: a {type(watcher).__name__} watches the sharded model")
        return 0
    ref_watcher, ref_optimizer = watched(reference, want)
    # Dead units merge where no row is split between ranks: every ≥2-D weight but a row-wise
    # tensor-parallel one (sharded on dim 1).
    units = {watcher.names[row] for row in watcher._unit_rows}
    matrices = {name for name, p in reference.named_parameters() if p.ndim >= 2}
    expected = {"2.weight"} if case == "tensor-parallel" else set()
    if matrices - units != expected:
        mismatches.append(f"{case}: dead units of {sorted(units)}, not of {sorted(matrices)}")
    record_diagnosis(ref_watcher, ref_optimizer, units, want)
    for step in range(STEPS):
        train(model, optimizer, step, accumulate=case == "accumulation")
        train(reference, ref_optimizer, step, accumulate=case == "accumulation")
    watcher.close()
    ref_watcher.close()
    if any(param.grad is not None for param in watcher._params):
        mismatches.append(f"{case}: the watcher keeps gradients alive after zero_grad()")
    if dist.get_rank() != 0:
        return 0
    return compare(case, got, want, mismatches)


class Diagnosed:
    """A watched model with the default diagnosis: its findings and host values by step."""

    def __init__(self, model: nn.Module) -> None:
        self.record = Recorder()
        self.findings: list[Any] = []
        self.host: dict[int, dict[str, float]] = {}
        self.watcher, self.optimizer = watched(model, self.record)
        self.diagnoser = Diagnoser(
            model, self.optimizer, every=1, start_step=0, hist_every=0, emit=self.record.emit,
            emit_host=self.emit_host, send_setup=lambda document: None,
            send_finding=self.findings.append, incidents=Incidents(),
        )  # fmt: skip

    def emit_host(self, step: int, values: list[tuple[str, float]]) -> None:
        self.host.setdefault(step, {}).update(values)

    def train(self, model: nn.Module, step: int, poison: bool) -> None:
        (x, y), = batches(step, 1)  # fmt: skip
        if poison:
            x[0, 0] = math.nan
        F.mse_loss(model(x), y).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.02)  # clips every step
        self.optimizer.step()
        self.optimizer.zero_grad()

    def close(self) -> None:
        self.watcher.close()
        self.diagnoser.close()


def diagnose_alike(mismatches: list[str]) -> int:
    """The default diagnosis of the sharded model equals the unsharded one's: the clip
    coefficient (from the sentinels' local shards), the pre-clip norm (from the merged norms),
    the backward passes, and the first non-finite finding: a weight written Inf between steps,
    then, in another run, a NaN input that makes every gradient NaN."""
    checked = 0
    for fault in ("weight", "gradient"):
        model, reference = model_pair("full")
        sharded_run, reference_run = Diagnosed(model), Diagnosed(reference)
        for step in range(STEPS):
            if fault == "weight" and step == STEPS - 1:
                with torch.no_grad():
                    reference[2].weight[0, 0] = math.inf
                    if dist.get_rank() == 0:  # rank 0 holds the first rows of the shard
                        model[2].weight.to_local()[0, 0] = math.inf
            poison = fault == "gradient" and step == STEPS - 1
            sharded_run.train(model, step, poison)
            reference_run.train(reference, step, poison)
        sharded_run.close()
        reference_run.close()
        if dist.get_rank() != 0:
            continue
        found = [(f.check, f.step, f.layer) for f in sharded_run.findings]
        want = [(f.check, f.step, f.layer) for f in reference_run.findings]
        layer = "2.weight" if fault == "weight" else "0.weight"
        if found != want or want != [(f"nonfinite-{fault}", STEPS - 1, layer)]:
            mismatches.append(f"diagnosis, {fault}: findings {found} != {want}")
        keys = ("clip/observed", "grad_norm/total_preclip", "accum/backward_passes")
        for step in range(STEPS - 1):  # the last step's gradients are not finite
            for key in keys:
                checked += 1
                a = sharded_run.host.get(step, {}).get(key, math.nan)
                b = reference_run.host.get(step, {}).get(key, math.inf)
                if not close(a, b):
                    mismatches.append(f"diagnosis, {fault}, step {step}, {key}: {a} != {b}")
            if reference_run.host[step]["clip/observed"] != 1.0:
                mismatches.append(f"diagnosis, step {step}: no clipping observed to compare")
    return checked


FAIL_STEP = 1


def held_by_rank_one(model: nn.Module) -> set[str]:
    """The parameters of which rank 1 (of 2) holds a non-empty piece: FSDP2 cuts dim 0 as
    ``torch.chunk`` does, rank 1 taking what the first ``ceil(n / 2)`` rows leave."""
    return {
        name
        for name, param in model.named_parameters()
        if sharded.is_dtensor(param) and param.shape[0] - math.ceil(param.shape[0] / 2) > 0
    }


def lacks_a_share(key: str, held: set[str], fault: str) -> bool:
    """Whether rank 0 must leave ``key`` out at the failing step: the statistics of the
    parameters rank 1 holds (the total gradient norm with them), or, where only rank 1's
    pre-step hook failed, their update ratios (the norms from before the update are missing)."""
    name = key.rpartition("/")[2]
    if fault == "pre-step":
        return key.startswith(f"{stats.UPDATE_STAT}/") and name in held
    return name in held or key == stats.TOTAL_GRAD_NORM


def drop_what_a_failing_rank_misses(mismatches: list[str]) -> int:
    """At one step rank 1's statistics and histograms fail (or, in another run, its pre-step
    hook, which reads the norms before the update): it still joins the collectives, nobody
    hangs or raises, and rank 0 reports no value lacking rank 1's share at that step (counting
    an incident), the rest (parameters of which rank 1 holds nothing, other steps) exactly as
    the unsharded copy. Returns the values checked."""
    checked = 0
    for case, fault in (("full", "statistics"), ("partial", "statistics"), ("full", "pre-step")):
        label = f"failing rank 1, {case}, {fault}"
        model, reference = model_pair(case)
        got, want = Recorder(), Recorder()
        watcher, optimizer = watched(model, got)
        ref_watcher, ref_optimizer = watched(reference, want)
        record_diagnosis(ref_watcher, ref_optimizer, {watcher.names[r] for r in watcher._unit_rows},
                         want)  # fmt: skip
        norms = sharded._norms

        def fail_at(method: Any, step: Any) -> Any:
            """``method``, raising at the step ``step()`` names: the failing one."""

            def call(*args: Any) -> Any:
                if step() == FAIL_STEP:
                    raise RuntimeError("planted")
                return method(*args)

            return call

        if dist.get_rank() == 1 and fault == "statistics":  # the post hook: at `step`
            at = (lambda w: lambda: w.step)(watcher)
            watcher._report = fail_at(watcher._report, at)  # type: ignore[method-assign]
            watcher._report_hist = fail_at(watcher._report_hist, at)  # type: ignore[method-assign]
        if dist.get_rank() == 1 and fault == "pre-step":  # before `step` moves on: `_next`
            sharded._norms = fail_at(norms, (lambda w: lambda: w._next)(watcher))
        for step in range(STEPS):
            train(model, optimizer, step, accumulate=False)
            train(reference, ref_optimizer, step, accumulate=False)
        watcher.close()
        ref_watcher.close()
        sharded._norms = norms
        incidents = watcher._incidents.by_kind
        if dist.get_rank() == 1:
            if sum(incidents.values()) == 0:
                mismatches.append(f"{label}: rank 1 recorded no incident")
            continue
        held = held_by_rank_one(model)
        if not held or held == set(watcher.names):
            mismatches.append(f"{label}: rank 1 holds {sorted(held)}: nothing to tell apart")
        # The reference, less what rank 0 must leave out at the failing step.
        for table in (want.scalars, want.hists):
            whole = table[FAIL_STEP]
            kept = {k: v for k, v in whole.items() if not lacks_a_share(k, held, fault)}
            dropping = fault == "statistics" or table is want.scalars
            if dropping and len(kept) == len(whole):
                mismatches.append(f"{label}: nothing to drop at step {FAIL_STEP}")
            table[FAIL_STEP] = kept  # type: ignore[assignment]
        if not want.scalars[FAIL_STEP] or not want.hists[FAIL_STEP]:
            mismatches.append(f"{label}: nothing left to report at step {FAIL_STEP}")
        checked += compare(label, got, want, mismatches)
        # One incident per merge that lacked a share: the statistics', and the histograms'.
        expected = 2 if fault == "statistics" else 1
        if incidents.get("sharded statistics incomplete") != expected:
            mismatches.append(f"{label}: rank 0's incidents {incidents}")
    return checked


def survive_ranks_that_do_not_watch_alike(mismatches: list[str]) -> None:
    """Rank 1 builds its watcher and closes it (as a rank whose run is off does), then watches
    other parameter names than rank 0 (as pipeline stages would): the ranks find out through
    the store at their first due step and report nothing, instead of hanging."""
    sharded.HANDSHAKE_TIMEOUT = timedelta(seconds=1)
    for fault in ("rank 1 does not watch", "rank 1 watches other names"):
        model, _ = model_pair("full")
        got = Recorder()
        if dist.get_rank() == 1 and fault == "rank 1 watches other names":
            watcher, optimizer = watched(nn.ModuleDict({"stage": model}), got)
        else:
            watcher, optimizer = watched(model, got)
        if dist.get_rank() == 1 and fault == "rank 1 does not watch":
            watcher.close()
        for step in range(STEPS):
            train(model, optimizer, step, accumulate=False)
        watcher.close()
        if dist.get_rank() == 0 and (got.scalars or got.hists or watcher._incidents.errors != 1):
            mismatches.append(f"{fault}: rank 0 reported {sorted(got.scalars)}, or no incident")


def run_job() -> tuple[str, dict[str, float]]:
    """A watched run on the sharded model; rank 0's unsharded reference of the last step."""
    model, reference = model_pair("full")
    optimizer = adam(model)
    run = trickscope.init(project="fsdp", flush_secs=0.1)
    run.watch(model, optimizer, every=1, hist_every=2)
    want = Recorder()
    ref_watcher, ref_optimizer = watched(reference, want)
    for step in range(RUN_STEPS):
        train(model, optimizer, step, accumulate=False)
        train(reference, ref_optimizer, step, accumulate=False)
    run.finish()
    ref_watcher.close()
    return run.id, want.scalars[RUN_STEPS - 1]


def main() -> None:
    faulthandler.enable()  # a rank that dies on a signal shows where, in the test's failure
    dist.init_process_group("gloo")
    mismatches: list[str] = []
    if "reduce" in sys.argv[1:]:  # the merge by reductions instead of the gather
        sharded.REDUCE_FROM_RANKS = dist.get_world_size()
        sys.argv.remove("reduce")
    if sys.argv[1:]:  # the slow cases named on the command line
        checked = sum(check(case, mismatches) for case in sys.argv[1:])
        dist.destroy_process_group()
        finish({"checked": checked, "mismatches": mismatches[:20]})
    checked = sum(check(case, mismatches) for case in ("full", "partial", "accumulation"))
    checked += diagnose_alike(mismatches)
    checked += drop_what_a_failing_rank_misses(mismatches)
    run_id, reference = run_job()
    survive_ranks_that_do_not_watch_alike(mismatches)
    dist.barrier()
    rank = dist.get_rank()
    dist.destroy_process_group()
    result = {"rank": rank, "checked": checked, "mismatches": mismatches[:20],
              "reference": reference if rank == 0 else {}, "run_id": run_id}  # fmt: skip
    finish(result)


def finish(result: dict[str, Any]) -> NoReturn:
    """Write the rank's result and end the process without the interpreter's teardown. Once in
    many CI runs a rank aborted at its very end ("terminate called without an active exception",
    no Python error) and 40 local repeats did not reproduce it; gloo's C++ threads torn down with
    the interpreter are the likely place (pytorch/pytorch#179291 describes such aborts). The
    job's work is done and its result written by then; the teardown is not under test."""
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
