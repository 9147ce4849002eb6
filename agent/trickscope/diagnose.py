"""The default diagnosis ``watch`` attaches beside the statistics (``docs/diagnosis.md`` §1–3).

Its own optimizer pre and post hooks, registered after the :class:`~trickscope.watch.Watcher`'s:

- pre (every ``check_every`` steps): one foreach norm over the weights and one over the gradients,
  the clip sentinels' norms, the AMP scale, and on due steps the loss-scale and DropPath
  measurements, stacked into one vector sent to a pinned :class:`~trickscope.probes.ring.Ring`.
  Vectors whose copy is complete are read on the host (CPU: at once; CUDA: polled) and give
  ``grad_norm/total``, ``grad_norm/total_preclip``, ``clip/observed`` (with the loop's
  ``clip_grad_norm_`` threshold, where its source shows it: ``clip/threshold`` and, under a
  GradScaler, ``clip/before_unscale``, :mod:`trickscope.probes.clip_call`), ``accum/loss_scale``,
  ``drop_path/*``, ``bn/batch_size/*`` and, at the first non-finite step, an agent finding.
  Counts of DropPath modules that changed their input in eval mode ride along on the next
  checked step (``drop_path/eval_changed/*``), or are read at close.
- post (due steps): dead units, eps dominance and the EMA's distance and norm, one device vector
  in the bulk statistics path; then the forward probes are armed for the next due step, and the
  setup document is refreshed from the calling frames (first steps, then every ``refresh`` steps).
- sharded models (FSDP2, DTensor): the per-step norms would be collectives on rank 0 alone; the
  sentinels read their local shards instead, and the merged statistics of due steps
  (:mod:`trickscope.sharded`, which also reports the dead units) come back as one more vector
  through the ring for the pre-clip norm and the first non-finite weight or gradient.

Nothing raises into the training loop: failures are counted in ``incidents``.
"""

from __future__ import annotations

import json
import math
import sys
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from trickscope import _foreach, _host, discover, dtensors, setup, shard_merge, sharded
from trickscope._incidents import Incidents
from trickscope._modules import unwrap
from trickscope.probes import (
    batchnorm,
    clip_call,
    drop_path,
    due,
    eval_mode,
    finite,
    loss_scale,
    sentinel,
    train_mode,
)
from trickscope.probes.ring import Ring
from trickscope_wire import AgentFinding

EmitHost = Callable[[int, list[tuple[str, float]]], None]
Emit = Callable[[int, Sequence[str], Tensor, list[tuple[str, float]]], None]

CLIP_TOLERANCE = 1e-4
COEFFICIENTS = 16  # sharded: due steps' clip coefficients kept until their merged norms come
EARLY_REFRESH = 3  # the setup is re-described after each of the first steps


@dataclass
class _Meta:
    """What one check vector holds, section by section, and the host facts of its step."""

    step: int
    passes: int
    sched_calls: int | None
    scale: bool = False  # the scaler's scale leads the vector
    grad_scale: bool = False  # then a fused optimizer's grad_scale
    sentinels: int = 0  # then befores, then afters
    weights: list[int] = field(default_factory=list)  # param indices of the weight norms
    grads: list[int] = field(default_factory=list)  # param indices of the gradient norms
    loss_scale: bool = False  # [scale, residual, probabilities]
    drop_path: list[str] = field(default_factory=list)  # blocks, three counts each
    eval_drop: list[tuple[str, int]] = field(default_factory=list)  # module, forwards: one count
    carried: bool = False  # last, a gradient's norm carried over from the previous step
    host: list[tuple[str, float]] = field(default_factory=list)  # host values measured by probes


@dataclass
class _Merged:
    """A due step's merged norms (sharded models): the gradients' of ``grads``, then every
    weight's from before the update."""

    step: int
    grads: list[int]


class Diagnoser:
    """The per-step check, the probes and the setup document for one model and optimizer."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        every: int,
        start_step: int,
        hist_every: int,
        emit: Emit,
        emit_host: EmitHost,
        send_setup: Callable[[dict[str, Any]], None],
        send_finding: Callable[[AgentFinding], None],
        incidents: Incidents,
        scaler: Any = None,
        scheduler: Any = None,
        ema: Any = None,
        total_steps: int | None = None,
        check_every: int = 1,
        frame: types.FrameType | None = None,
    ) -> None:
        self._model = model
        self._inner = unwrap(model)
        self._optimizer = optimizer
        named = list(self._inner.named_parameters())
        self.names = [n for n, _ in named]
        self._params = [p for _, p in named]
        self._ids = {id(p): n for n, p in named}
        # Norms of DTensor parameters would be collectives on rank 0 alone: the per-step norms
        # and due-step probes that read parameters are off for them. The merged statistics
        # (trickscope.sharded) report grad_norm/total and dead units on due steps, and hand
        # their merged table here for the first non-finite finding and the pre-clip norm; the
        # clip sentinels read their local shards (clipping scales every element alike).
        self._sharded = dtensors.has_dtensors(model)
        self._coefficients: dict[int, float] = {}  # sharded: clip coefficients of due steps
        self._every = every
        self._hist_every = hist_every
        self._check_every = check_every
        self._start = start_step
        self._refresh = hist_every if hist_every > 0 else 100
        self._emit = emit
        self._emit_host = emit_host
        self._send_setup = send_setup
        self._send_finding = send_finding
        self._incidents = incidents
        self._given = {"scaler": scaler, "scheduler": scheduler, "ema": ema}
        self._scaler = scaler
        # The max_norm of the loop's clip_grad_norm_ call, read from its source at discovery.
        self._clip_threshold: float | None = None
        self._scheduler = scheduler
        self._ema = ema
        self._total_steps = total_steps
        self._adam = setup.optimizer_family(optimizer) == "adam"
        self._finite = True  # until the first non-finite step is found
        self._ring = Ring()
        self._next = start_step
        self._due_count = 0
        self._sent: str | None = None
        self._handles: list[Any] = []
        picked = sentinel.pick(self.names, self._params)
        self._sentinels = sentinel.Sentinels([self._params[i] for i in picked], incidents)
        self._loss = loss_scale.LossScaleProbe(model, incidents)
        self._sites = drop_path.find(model)
        self._drop = drop_path.DropPathProbe(self._sites, incidents)
        self._eval_drop = eval_mode.EvalDropPathProbe(self._sites, incidents)
        self._batchnorm = batchnorm.BatchNormProbe(batchnorm.find(model), incidents)
        self._train_mode = train_mode.TrainModeProbe(model)
        if self._sharded and (watcher := sharded.watcher_of(optimizer)) is not None:
            watcher.listeners.append(self._merged)
        self._discover(frame)
        self._arm(self._next)
        self._handles = [
            optimizer.register_step_pre_hook(self._pre),
            optimizer.register_step_post_hook(self._post),
        ]

    def close(self) -> None:
        """Remove every hook and read what is left in the ring."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._sentinels.close()
        self._loss.close()
        self._drop.close()
        self._eval_drop.close()
        self._batchnorm.close()
        self._train_mode.close()
        try:
            self._drain()
            self._read_at_close()
        except Exception as exc:
            self._incidents.error("diagnosis close", exc)

    # -- setup document ------------------------------------------------------------------------

    def _discover(self, frame: types.FrameType | None) -> None:
        try:
            want = {key: value is None for key, value in self._given.items()}
            if any(want.values()):
                found = discover.scan(
                    frame,
                    self._model,
                    self._optimizer,
                    want_scheduler=want["scheduler"],
                    want_ema=want["ema"],
                    want_scaler=want["scaler"],
                )
                self._scheduler = self._given["scheduler"] or found.scheduler or self._scheduler
                self._ema = self._given["ema"] or found.ema or self._ema
                self._scaler = self._given["scaler"] or found.scaler or self._scaler
            self._clip_threshold = clip_call.threshold(frame) or self._clip_threshold
            self._describe()
        except Exception as exc:
            self._incidents.error("setup discovery", exc)

    def describe(self) -> dict[str, Any]:
        """The setup document as it stands."""
        return setup.describe(
            self._model,
            self._optimizer,
            scaler=self._scaler,
            scheduler=self._scheduler,
            ema=self._ema,
            total_steps=self._total_steps,
            drop_paths=drop_path.describe(self._sites),
            every=self._every,
            hist_every=self._hist_every,
        )

    def _describe(self) -> None:
        document = self.describe()
        # Schedulers move the learning rate (OneCycleLR the momentum or betas too): a change of
        # those alone is no new setup.
        moving = {"lr": None, "momentum": None, "betas": None}
        stable = json.dumps(
            {
                **document,
                "optimizer": {
                    **document["optimizer"],
                    "groups": [{**g, **moving} for g in document["optimizer"]["groups"]],
                },
            },
            sort_keys=True,
            default=str,
        )
        if stable != self._sent:
            self._sent = stable
            self._send_setup(document)

    # -- hooks -----------------------------------------------------------------------------------

    def _due(self, step: int) -> bool:
        return step % self._every == 0

    def _arm(self, step: int) -> None:
        armed = self._due(step)
        self._loss.armed = armed
        self._drop.armed = armed
        self._batchnorm.armed = armed

    def _pre(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        step = self._next
        try:
            self._check(step, kwargs)
            self._drain()
        except Exception as exc:
            self._incidents.error("diagnosis pre-step hook", exc)

    def _post(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        step = self._next
        self._next += 1
        try:
            if self._due(step):
                self._due_count += 1
                with torch.no_grad():
                    self._report_due(step)
            self._arm(self._next)
            since = step - self._start
            if since < EARLY_REFRESH or since % self._refresh == 0:
                self._discover(sys._getframe(1))
        except Exception as exc:
            self._incidents.error("diagnosis post-step hook", exc)

    def _check(self, step: int, kwargs: Any) -> None:
        passes, befores, afters = self._sentinels.take()
        carried = self._sentinels.take_carried()
        last_epoch = getattr(self._scheduler, "last_epoch", None)
        sched_calls = last_epoch if isinstance(last_epoch, int) else None
        meta = _Meta(step, passes, sched_calls)
        due_step = self._due(step)
        if step % self._check_every and not due_step:
            self._ring_host(meta)
            return
        pieces: list[Tensor] = []
        scale = getattr(self._scaler, "_scale", None)
        if isinstance(scale, Tensor):
            meta.scale = True
            pieces.append(scale.detach().reshape(()))
        grad_scale = kwargs.get("grad_scale") if isinstance(kwargs, dict) else None
        if isinstance(grad_scale, Tensor):
            meta.grad_scale = True
            pieces.append(grad_scale.detach().reshape(()))
        meta.sentinels = len(befores)
        pieces.extend(befores)
        pieces.extend(afters)
        with torch.no_grad():
            if self._finite and not self._sharded:
                meta.weights = list(range(len(self._params)))
                pieces.extend(_norms([p.detach() for p in self._params]))
            meta.grads = [
                i for i, p in enumerate(self._params) if p.grad is not None and not self._sharded
            ]
            grads = [self._params[i].grad for i in meta.grads]
            pieces.extend(_norms([g.detach() for g in grads if g is not None]))
            if due_step:
                value = self._loss.take()
                if value is not None:
                    meta.loss_scale = True
                    pieces.extend(value.unbind())
                for block, counts in self._drop.take():
                    meta.drop_path.append(block)
                    pieces.extend(counts.unbind())
                smallest = self._batchnorm.take()
                if smallest is not None:
                    meta.host.append((f"bn/batch_size/{smallest[0]}", float(smallest[1])))
                meta.host.extend(self._train_mode.take())
            # Eval forwards happen between steps, due or not: read on the next checked step.
            for module, checked, changed in self._eval_drop.take():
                if changed is None:
                    meta.host.append((f"drop_path/eval_changed/{module}", 0.0))
                else:
                    meta.eval_drop.append((module, checked))
                    pieces.append(changed)
        if carried is not None:
            meta.carried = True
            pieces.append(carried)
        if not pieces:
            self._ring_host(meta)
            return
        device = self._params[0].device
        vector = torch.stack([p.to(device, torch.float32, non_blocking=True) for p in pieces])
        if not self._ring.ship(vector, meta):
            self._incidents.thin("all check buffers in flight")
            self._ring_host(meta)

    def _ring_host(self, meta: _Meta) -> None:
        """A step whose vector is not computed still reports its host counters."""
        host = [("accum/backward_passes", float(meta.passes)), *meta.host]
        if meta.sched_calls is not None:
            host.append(("sched/calls", float(meta.sched_calls)))
        self._emit_host(meta.step, host)

    def _drain(self) -> None:
        for meta, values in self._ring.poll():
            if isinstance(meta, _Merged):
                self._read_merged(meta, values)
            else:
                self._read(meta, values)

    def _merged(self, step: int, merged: Tensor, plan: shard_merge.Plan) -> None:
        """A due step's merged table (rank 0 of a sharded model): its gradient and weight norms
        go to the host through the ring, as a check vector does."""
        try:
            grads = merged[:, shard_merge.GRAD_FIRST].index_select(0, plan.total_params)
            norms = torch.cat([grads, merged[:, shard_merge.BEFORE_NORM]])
            if not self._ring.ship(norms.to(torch.float32), _Merged(step, plan.grad_rows)):
                self._incidents.thin("all check buffers in flight")
        except Exception as exc:
            self._incidents.error("diagnosis of merged statistics", exc)

    def _read_merged(self, meta: _Merged, values: list[float]) -> None:
        """The pre-clip norm and the first non-finite finding from a due step's merged norms:
        the weights before the step's update, then its gradients, as the per-step check reads
        them (on due steps only: no other step has a merge)."""
        grads, weights = values[: len(meta.grads)], values[len(meta.grads) :]
        coefficient = self._coefficients.pop(meta.step, None)
        if coefficient is not None and grads:
            total = math.sqrt(math.fsum(g * g for g in grads))
            clipped = coefficient < 1.0 - CLIP_TOLERANCE
            preclip = total / coefficient if clipped else total
            self._emit_host(meta.step, [("grad_norm/total_preclip", preclip)])
        if not self._finite:
            return
        found = finite.first_nonfinite("weight", meta.step, self.names, weights)
        if found is None:
            names = [self.names[i] for i in meta.grads]
            found = finite.first_nonfinite("gradient", meta.step, names, grads)
        if found is not None:
            self._finite = False
            self._send_finding(found)

    def _read(self, meta: _Meta, values: list[float]) -> None:
        """Host work on one check vector: the totals, the probes and the finiteness check."""
        at = 0
        scale = None
        if meta.scale:
            scale, at = values[at], at + 1
        grad_scale = 1.0
        if meta.grad_scale:
            grad_scale, at = values[at] or 1.0, at + 1
        k = meta.sentinels
        befores, afters = values[at : at + k], values[at + k : at + 2 * k]
        at += 2 * k
        weights = values[at : at + len(meta.weights)]
        at += len(meta.weights)
        grads = values[at : at + len(meta.grads)]
        at += len(meta.grads)
        host: list[tuple[str, float]] = [("accum/backward_passes", float(meta.passes))]
        if meta.sched_calls is not None:
            host.append(("sched/calls", float(meta.sched_calls)))
        if meta.grads:
            total = math.sqrt(math.fsum(g * g for g in grads)) / grad_scale
            # On due steps the statistics carry grad_norm/total already.
            if not self._due(meta.step):
                host.append(("grad_norm/total", total))
            coef = sentinel.coefficient(befores, afters, scale)
            if coef is not None:
                clipped = coef < 1.0 - CLIP_TOLERANCE
                preclip = total / coef if clipped else total
                host.append(("grad_norm/total_preclip", preclip))
                host.append(("clip/observed", 1.0 if clipped else 0.0))
                host.extend(self._clip_call(preclip, coef, scale))
        elif self._sharded and k:
            # No total here (it is merged on due steps): the coefficient alone, kept for the
            # due step's merged norms (_read_merged), which give the pre-clip total.
            coef = sentinel.coefficient(befores, afters, scale)
            if coef is not None:
                host.append(("clip/observed", 1.0 if coef < 1.0 - CLIP_TOLERANCE else 0.0))
                if self._due(meta.step):
                    self._coefficients[meta.step] = coef
                    while len(self._coefficients) > COEFFICIENTS:
                        del self._coefficients[next(iter(self._coefficients))]
        if meta.loss_scale:
            value, residual, probabilities = values[at : at + 3]
            at += 3
            if scale:
                value /= scale  # the logits' gradient carried the AMP scale
            if residual < loss_scale.RESIDUAL and value > 0 and math.isfinite(value):
                host.append(("accum/loss_scale", value))
                host.append(("loss/softmax_inputs", probabilities))
        for block in meta.drop_path:
            dropped, unresidual, samples = values[at : at + 3]
            at += 3
            if samples > 0:
                host.append((f"drop_path/realised/{block}", dropped / samples))
            if dropped > 0:
                host.append((f"drop_path/unresidual/{block}", unresidual / dropped))
        for module, checked in meta.eval_drop:
            host.append((f"drop_path/eval_changed/{module}", values[at] / checked))
            at += 1
        if meta.carried:
            host.append(("grad/carried_over", 1.0 if values[at] > 0 else 0.0))
            at += 1
        elif meta.sentinels:
            host.append(("grad/carried_over", 0.0))
        host.extend(meta.host)
        self._emit_host(meta.step, host)
        if self._finite:
            self._find_nonfinite(meta, weights, grads)

    def _clip_call(
        self, preclip: float, coef: float, scale: float | None
    ) -> list[tuple[str, float]]:
        """The clip call's threshold, and under a GradScaler whether the call compared the
        loss-scaled norm with it (``clip/before_unscale``), where the coefficient says so."""
        threshold = self._clip_threshold
        if threshold is None:
            return []
        host = [("clip/threshold", threshold)]
        if scale is not None:
            verdict = clip_call.before_unscale(preclip, coef, threshold, scale)
            if verdict is not None:
                host.append(("clip/before_unscale", verdict))
        return host

    def _read_at_close(self) -> None:
        """Forwards after the last step (a final evaluation) have no next step to be read
        with: read them here, at the last step, after training, with one host copy."""
        host: list[tuple[str, float]] = []
        taken = self._eval_drop.take()
        counts = [changed for _, _, changed in taken if changed is not None]
        # The one sync of this probe, when the hooks are gone: training is over.
        read = _host.read(torch.stack([c.to("cpu") for c in counts])) if counts else []
        for module, checked, changed in taken:
            share = 0.0 if changed is None else read.pop(0) / checked
            host.append((f"drop_path/eval_changed/{module}", share))
        forwards = self._train_mode.take_forwards()
        if forwards is not None:
            host.append(("mode/nograd_training_forwards", forwards))
        if host:
            self._emit_host(self._next - 1 if self._next > self._start else self._start, host)

    def _find_nonfinite(self, meta: _Meta, weights: list[float], grads: list[float]) -> None:
        found = None
        if meta.weights:
            found = finite.first_nonfinite(
                "weight", meta.step, [self.names[i] for i in meta.weights], weights
            )
        if found is None and meta.grads:
            found = finite.first_nonfinite(
                "gradient", meta.step, [self.names[i] for i in meta.grads], grads
            )
        if found is not None:
            self._finite = False  # the first step is what matters; the totals go on
            self._send_finding(found)

    def _report_due(self, step: int) -> None:
        if self._sharded:
            return
        values: list[tuple[str, Tensor]] = due.dead_units(self.names, self._params)
        host: list[tuple[str, float]] = []
        if self._adam and (self._due_count - 1) % due.EPS_EVERY == 0:
            values.extend(due.eps_fractions(self._optimizer, self._ids))
        if self._ema is not None:
            try:
                device_values, host = due.ema_values(self._ema, self._inner, step)
                values.extend(device_values)
            except Exception as exc:  # an EMA on another device, say: the rest still goes
                self._incidents.error("EMA probe", exc)
        if not values:
            if host:
                self._emit_host(step, host)
            return
        device = self._params[0].device
        vector = torch.stack([v.to(device, torch.float32, non_blocking=True) for _, v in values])
        self._emit(step, [key for key, _ in values], vector, host)


def _norms(tensors: list[Tensor]) -> list[Tensor]:
    """L2 norm of each tensor as float32, one foreach call per (device, dtype)."""
    out: list[Tensor] = [torch.empty(0)] * len(tensors)
    for (_, dtype), members in _foreach.group_by_device_dtype(tensors).items():
        kind = torch.float32 if dtype.is_floating_point else None
        group = [tensors[i] if kind else tensors[i].float() for i in members]
        for i, value in zip(members, _foreach.norm(group, dtype=kind), strict=True):
            out[i] = value
    return out
