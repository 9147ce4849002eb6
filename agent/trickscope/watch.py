"""Optimizer hooks that sample per-layer statistics every ``every`` optimizer steps, and
histograms every ``hist_every``.

``step`` is the global optimizer step: the watcher counts ``optimizer.step()`` calls from
``start_step``. The pre hook snapshots a fixed sample of the weights on due steps (for the
update ratio, :mod:`trickscope.update_sample`); the post
hook computes every statistic as device ops and hands one vector to ``emit`` (histograms: one
vector to ``emit_hist``). The learning rate of every param group is read every ``lr_every``
steps (default: each step) and handed to ``emit_host`` when nothing else is due: Python numbers
already on the host, so no device work. On other steps each hook costs an integer comparison.

Gradients are read at the optimizer-step boundary, which is after accumulation, after the DDP
all-reduce and, under AMP, after ``GradScaler.unscale_``: ``scaler.step(optimizer)`` unscales
before it calls ``optimizer.step()``. An optimizer that unscales inside its own fused step
receives ``grad_scale`` as an argument; the hooks see it and divide the gradient statistics by
it. When the scaler skips a step (Inf/NaN gradients) it does not call ``optimizer.step()``, so no
hook runs and the step is not counted: ``step`` counts optimizer updates that happened. The
skipped ones are counted apart, from the scaler's scale (:mod:`trickscope.probes.amp_skips`),
and reported as ``amp/skipped_steps`` (the running total) beside ``amp/scale``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.profiler import record_function

from trickscope import row_kernels, segments, stats, streamed
from trickscope._checks import check_int
from trickscope._incidents import Incidents
from trickscope._modules import unwrap
from trickscope.config import scratch_bytes as default_scratch_bytes
from trickscope.dtensors import has_dtensors
from trickscope.probes.amp_skips import SkippedSteps
from trickscope.update_sample import SAMPLE_ELEMENTS, UpdateSample

Emit = Callable[[int, Sequence[str], Tensor, list[tuple[str, float]]], None]
EmitHost = Callable[[int, list[tuple[str, float]]], None]
EmitHist = Callable[[int, Sequence[str], int, Tensor], None]


@dataclass
class _Group:
    """Parameters of one (device, dtype), by index into the watched list."""

    every: list[int]
    with_grad: list[int]
    n_every: Tensor
    n_with_grad: Tensor | None
    scratch: stats.Scratch
    # A sample of the weights with a gradient, as they were before the step (update ratio).
    before: UpdateSample | None
    # The two lists' buffer layout keys, kept: rebuilding them costs a pass over the parameters.
    every_shapes: stats.Shapes
    grad_shapes: stats.Shapes
    # The histograms' blocks: (parameters with a gradient, all) of at most the scratch size.
    hist_parts: list[tuple[list[int], list[int]]]
    hist_limit: int  # elements: a tensor larger than this is histogrammed streamed


@dataclass
class _Layout:
    """What a due step computes, for one pattern of devices, dtypes and missing gradients."""

    groups: list[_Group]
    keys: list[str]
    hist_keys: list[str]
    device: torch.device


class Watcher:
    """Hooks on one optimizer reporting on one model's parameters.

    ``scratch_bytes`` caps the scratch buffer per device (default: ``TRICKSCOPE_SCRATCH_BYTES``,
    else :func:`trickscope.config.scratch_bytes`); ``update_sample`` is the number of elements
    per tensor the update ratio reads (a tensor that small or smaller is read whole: exact).
    """

    def __new__(cls, model: nn.Module, *args: Any, **kwargs: Any) -> Watcher:
        # DTensor parameters (FSDP2, tensor parallel): every rank's shards, merged.
        if cls is Watcher and isinstance(model, nn.Module) and has_dtensors(model):
            from trickscope.sharded import ShardedWatcher  # it builds on this module

            return super().__new__(ShardedWatcher)
        return super().__new__(cls)

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        every: int,
        start_step: int,
        emit: Emit,
        incidents: Incidents,
        hist_every: int = 0,
        bins: int = stats.BINS,
        emit_hist: EmitHist | None = None,
        scaler: Any = None,
        lr_every: int = 0,
        emit_host: EmitHost | None = None,
        fused: bool = True,
        update_ratio: bool = True,
        scratch_bytes: int | None = None,
        update_sample: int = SAMPLE_ELEMENTS,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"watch() needs model to be a torch.nn.Module, got {type(model).__name__} "
                f"{model!r:.80}"
            )
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"watch() needs optimizer to be a torch.optim.Optimizer, got "
                f"{type(optimizer).__name__} {optimizer!r:.80}"
            )
        self._every = check_int("every", every, 1)
        self._hist_every = check_int("hist_every", hist_every, 0)
        self._lr_every = check_int("lr_every", lr_every, 0) if emit_host is not None else 0
        self._bins = check_int("bins", bins, 1)
        self._scratch_bytes = (
            None if scratch_bytes is None else check_int("scratch_bytes", scratch_bytes, 1)
        )
        self._update_sample = check_int("update_sample", update_sample, 1)
        if scratch_bytes is None:  # a bad TRICKSCOPE_SCRATCH_BYTES is said here, to the caller
            default_scratch_bytes(None)
        start = check_int("start_step", start_step, 0)
        if scaler is not None and not hasattr(scaler, "_scale"):
            raise TypeError(
                f"watch() needs scaler to be a torch.amp.GradScaler (or None), got "
                f"{type(scaler).__name__}"
            )
        named = list(unwrap(model).named_parameters())  # names without wrapper prefixes
        if not named:
            raise ValueError(f"watch() got a model without parameters: {type(model).__name__}")
        self.names = [name for name, _ in named]
        self._params: list[Tensor] = [param for _, param in named]
        self._optimizer = optimizer
        self._emit = emit
        self._emit_hist = emit_hist
        self._emit_host = emit_host
        self._scaler = scaler
        self._skips = SkippedSteps(scaler) if scaler is not None else None
        self._incidents = incidents
        self._fused = fused
        self._update_ratio = bool(update_ratio)
        self._layouts: dict[tuple[Any, ...], _Layout] = {}
        self._scratches: dict[torch.device, stats.Scratch] = {}
        self._pending: _Layout | None = None
        self.step = start
        self._next = start
        # The next step with scalars due and the next with histograms due; ``_due`` is the
        # earlier of the two, so a step with nothing due costs one comparison.
        self._due_scalars = _first_multiple(start, self._every)
        self._due_hist = _first_multiple(start, self._hist_every) if self._hist_every else -1
        self._due_lr = _first_multiple(start, self._lr_every) if self._lr_every else -1
        self._due = self._earliest()
        self._handles = [
            optimizer.register_step_pre_hook(self._pre),
            optimizer.register_step_post_hook(self._post),
        ]

    def close(self) -> None:
        """Remove the hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    # The hooks run on the training thread: no host syncs, nothing raised.

    def _pre(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self.step = self._next
        if self._next != self._due:
            return
        try:
            self._pending = None
            # Only the scalars' update ratio needs the weights from before the step.
            # no_grad: the parameters are read without recording a graph or detach() each.
            with record_function("trickscope.watch.pre_step"), torch.no_grad():
                if self._next == self._due_scalars and self._update_ratio:
                    self._pending = self._snapshot()
                elif self._next in (self._due_scalars, self._due_hist):
                    self._pending = self._layout()
        except Exception as exc:
            self._incidents.error("watch pre-step hook", exc)

    def _post(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self._next += 1
        step = self.step
        if self._skips is not None:
            try:
                self._skips.after_step()
            except Exception as exc:
                self._incidents.error("watch skipped-step count", exc)
        if step != self._due:
            return
        scalars = step == self._due_scalars
        hist = step == self._due_hist
        if scalars:
            self._due_scalars += self._every
        if hist:
            self._due_hist += self._hist_every
        if step == self._due_lr:
            self._due_lr += self._lr_every
            if not scalars:  # a scalar report carries the learning rates itself
                self._report_lr()
        self._due = self._earliest()
        layout, self._pending = self._pending, None
        if layout is None:
            return
        try:
            # A fused AMP optimizer gets the scale and leaves the gradients scaled.
            grad_scale = kwargs.get("grad_scale") if isinstance(kwargs, dict) else None
            # Named ranges: the agent's share shows in the user's own profiler traces.
            if scalars:
                with record_function("trickscope.watch.statistics"), torch.no_grad():
                    self._report(layout, grad_scale)
            if hist:
                with record_function("trickscope.watch.histograms"), torch.no_grad():
                    self._report_hist(layout, grad_scale)
        except Exception as exc:
            self._incidents.error("watch post-step hook", exc)

    def _earliest(self) -> int:
        return min(due for due in (self._due_scalars, self._due_hist, self._due_lr) if due >= 0)

    def _report_lr(self) -> None:
        # Tensor learning rates (capturable optimizers) would need a device copy: they ride
        # with the scalar statistics instead.
        try:
            host = [
                (f"lr/group{index}", float(lr))
                for index, group in enumerate(self._optimizer.param_groups)
                if isinstance(lr := group.get("lr"), (int, float))
            ]
            if host and self._emit_host is not None:
                self._emit_host(self.step, host)
        except Exception as exc:
            self._incidents.error("watch learning-rate report", exc)

    def _layout(self) -> _Layout:
        # `p.grad is None` is a Python check, not a device read: the pattern of missing
        # gradients is known on the host and selects a cached layout.
        signature = tuple((p.device, p.dtype, p.grad is not None) for p in self._params)
        layout = self._layouts.get(signature)
        if layout is None:
            layout = self._layouts[signature] = self._build(signature)
        return layout

    def _build(self, signature: tuple[Any, ...]) -> _Layout:
        by_kind: dict[tuple[Any, Any], list[int]] = {}
        for index, (device, dtype, _) in enumerate(signature):
            by_kind.setdefault((device, dtype), []).append(index)
        groups: list[_Group] = []
        keys: list[str] = []
        hist_keys: list[str] = []
        for (device, _), kind in by_kind.items():
            limit = max((self._scratch_bytes or default_scratch_bytes(device)) // 4, segments.ROW)
            size = {i: self._params[i].numel() for i in kind}
            # Where the row kernels read the tensors in place (CUDA) the scalar statistics need
            # no scratch: they take large blocks, each a few launches. The histograms, which
            # load their tensors, go through blocks of the scratch's size.
            in_place = row_kernels.usable(device) and row_kernels.readable(
                [self._params[i] for i in kind]
            )
            scalar_limit = IN_PLACE_BLOCK_ELEMENTS if in_place else limit
            for members in _blocks(kind, [size[i] for i in kind], scalar_limit):
                with_grad = [i for i in members if signature[i][2]]
                hist_parts = [
                    ([i for i in part if signature[i][2]], part)
                    for part in _blocks(members, [size[i] for i in members], limit)
                ]
                params = [self._params[i] for i in members]
                n_every = stats.numels(params)
                n_grad = stats.numels([self._params[i] for i in with_grad]) if with_grad else None
                # One scratch buffer per device serves every block, every layout, and in each
                # the gradients, the weights and the update in turn.
                scratch = self._scratches.get(device)
                if scratch is None:
                    scratch = self._scratches[device] = stats.Scratch(params, limit)
                before = None
                if with_grad and self._update_ratio:
                    sampled = [self._params[i] for i in with_grad]
                    before = UpdateSample(sampled, self._update_sample)
                groups.append(
                    _Group(
                        members,
                        with_grad,
                        n_every,
                        n_grad,
                        scratch,
                        before,
                        stats.shapes_of(params),
                        stats.shapes_of([self._params[i] for i in with_grad]),
                        hist_parts,
                        limit,
                    )
                )
                for part_grads, part in hist_parts:
                    hist_keys.extend(f"{stats.GRAD_HIST}/{self.names[i]}" for i in part_grads)
                    hist_keys.extend(f"{stats.WEIGHT_HIST}/{self.names[i]}" for i in part)
                for stat in stats.GRAD_STATS:
                    keys.extend(f"{stat}/{self.names[i]}" for i in with_grad)
                for stat in stats.WEIGHT_STATS:
                    keys.extend(f"{stat}/{self.names[i]}" for i in members)
                if before is not None:
                    keys.extend(f"{stats.UPDATE_STAT}/{self.names[i]}" for i in with_grad)
        if any(signature[i][2] for i in range(len(signature))):
            keys.append(stats.TOTAL_GRAD_NORM)
        return _Layout(groups, keys, hist_keys, self._params[0].device)

    def _snapshot(self) -> _Layout:
        layout = self._layout()
        for group in layout.groups:
            if group.before is not None:
                params = [self._params[i] for i in group.with_grad]
                group.before.snapshot(params, self._fused)
        return layout

    def _report(self, layout: _Layout, grad_scale: Tensor | None) -> None:
        fused = self._fused
        pieces: list[Tensor] = []
        norms: list[Tensor] = []
        for group in layout.groups:
            scratch = group.scratch
            if group.n_with_grad is not None:
                grads: list[Tensor] = [self._params[i].grad for i in group.with_grad]  # type: ignore[misc]
                block = stats.grad_stats(
                    grads, group.n_with_grad, scratch=scratch, fused=fused, shapes=group.grad_shapes
                )
                if isinstance(grad_scale, Tensor):
                    rows = stats.GRAD_SCALED_ROWS
                    inverse = 1.0 / grad_scale.to(block.device, torch.float32)
                    block = torch.cat([block[:rows] * inverse, block[rows:]])
                norms.append(block[0])
                pieces.append(block.reshape(-1))
            weights = [self._params[i] for i in group.every]
            block = stats.weight_stats(
                weights, group.n_every, scratch=scratch, fused=fused, shapes=group.every_shapes
            )
            pieces.append(block.reshape(-1))
            if group.before is not None:
                after = [self._params[i] for i in group.with_grad]
                pieces.append(group.before.ratio(after, fused))
        device = layout.device
        pieces = [piece.to(device, non_blocking=True) for piece in pieces]
        if norms:
            pieces.append(stats.total_norm(torch.cat([n.to(device) for n in norms])))
        keys: Sequence[str] = layout.keys
        host: list[tuple[str, float]] = []
        extra_keys: list[str] = []
        scale = getattr(self._scaler, "_scale", None)
        # GradScaler.get_scale() reads the scale back to the host; its tensor rides the copy.
        # At the post hook it still holds the scale this step's gradients were computed with
        # (scaler.update() comes after scaler.step()).
        if isinstance(scale, Tensor):
            pieces.append(scale.detach().reshape(1).to(device, torch.float32, non_blocking=True))
            extra_keys.append(stats.AMP_SCALE)
        skipped = self._skips.count if self._skips is not None else None
        if skipped is not None:
            pieces.append(skipped.reshape(1).to(device, non_blocking=True))
            extra_keys.append(stats.AMP_SKIPPED)
        for index, param_group in enumerate(self._optimizer.param_groups):
            lr = param_group.get("lr")
            key = f"lr/group{index}"
            if isinstance(lr, Tensor):
                pieces.append(lr.detach().reshape(1).to(device, torch.float32, non_blocking=True))
                extra_keys.append(key)
            elif isinstance(lr, (int, float)):
                host.append((key, float(lr)))
        if extra_keys:
            keys = [*keys, *extra_keys]
        self._emit(self.step, keys, torch.cat(pieces), host)

    def _report_hist(self, layout: _Layout, grad_scale: Tensor | None) -> None:
        emit = self._emit_hist
        if emit is None:
            return
        bins = self._bins
        pieces: list[Tensor] = []
        for group in layout.groups:
            for part_grads, part in group.hist_parts:
                if part_grads:
                    grads: list[Tensor] = [self._params[i].grad for i in part_grads]  # type: ignore[misc]
                    block = self._histograms(grads, group)
                    if isinstance(grad_scale, Tensor):
                        edges = block[:, :2] / grad_scale.to(block.device, torch.float64)
                        block = torch.cat([edges, block[:, 2:]], dim=1)
                    pieces.append(block.reshape(-1))
                weights = [self._params[i] for i in part]
                pieces.append(self._histograms(weights, group).reshape(-1))
        device = layout.device
        values = torch.cat([piece.to(device, non_blocking=True) for piece in pieces])
        emit(self.step, layout.hist_keys, bins, values)

    def _histograms(self, tensors: list[Tensor], group: _Group) -> Tensor:
        """Histograms of one block through the scratch buffer, or of one tensor larger than
        the buffer read a chunk at a time."""
        if len(tensors) == 1 and tensors[0].numel() > group.hist_limit:
            return streamed.histogram(tensors[0], self._bins)
        return stats.histograms(tensors, self._bins, scratch=group.scratch, fused=self._fused)


# Elements of a block of the scalar statistics where the row kernels read the tensors in place
# (512 MiB of float32): should they fail and the torch ops take over, the block goes through the
# scratch buffer in parts of its size (``stats.Scratch.limit``).
IN_PLACE_BLOCK_ELEMENTS = 1 << 27


def _blocks(members: list[int], sizes: list[int], limit: int) -> list[list[int]]:
    """``members`` cut, in order, into runs whose row-aligned sizes add up to at most ``limit``
    elements (the scratch buffer's size: ``scratch_bytes`` / 4), so that the buffer stays that
    small whatever the model's size (a tensor larger than that is a block of its own, whose
    histograms and, where they cannot read it in place, scalar statistics are read a chunk at
    a time: :mod:`trickscope.streamed`)."""
    blocks: list[list[int]] = [[]]
    total = 0
    for member, size in zip(members, sizes, strict=True):
        padded = segments.padded(size)
        if blocks[-1] and total + padded > limit:
            blocks.append([])
            total = 0
        blocks[-1].append(member)
        total += padded
    return blocks


def _first_multiple(start: int, period: int) -> int:
    """The first multiple of ``period`` at or after ``start``."""
    return -(-start // period) * period
