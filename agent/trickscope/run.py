"""A run: what ``trickscope.init`` returns and the training script talks to."""

from __future__ import annotations

import atexit
import dataclasses
import numbers
import os
import platform
import socket
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

import torch
from torch import Tensor, nn

from trickscope import leftovers
from trickscope._checks import check_int
from trickscope._incidents import Incidents
from trickscope._sanitize import (
    MAX_LAYERS,
    MAX_NAME_CHARS,
    MAX_SERIES_CHARS,
    MAX_TAG_CHARS,
    MAX_TAGS,
    clean_names,
    clean_text,
    json_document,
    json_safe,
)
from trickscope._signals import unwatch_sigterm, watch_sigterm
from trickscope.announce import announce_run, default_name
from trickscope.config import AgentConfig
from trickscope.diagnose import Diagnoser
from trickscope.distributed import Rank
from trickscope.journal import Request
from trickscope.metrics import MetricLog
from trickscope.rank_summary import RankSummary
from trickscope.scalars import Layout
from trickscope.sender import Sample, Sender
from trickscope.transfer import Handoff
from trickscope.update_sample import SAMPLE_ELEMENTS
from trickscope.watch import Watcher
from trickscope_wire import (
    AgentFinding,
    FindingsDeclare,
    LayersDeclare,
    RankDeclare,
    RunCreate,
    RunFinish,
    SetupDeclare,
    dumps,
)


def system_info(rank: Rank | None = None) -> dict[str, Any]:
    """Versions and hardware of this process (rank 0's in a distributed job), stored with the
    run."""
    cuda = torch.cuda.is_available()
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "pid": os.getpid(),
        "cuda_available": cuda,
        "device": torch.cuda.get_device_name(0) if cuda else (platform.processor() or "cpu"),
    }
    if rank is not None:
        info["distributed"] = {"world_size": rank.world_size, "backend": rank.backend}
    return info


def rank_system_info() -> dict[str, Any]:
    """:func:`system_info` of this rank's process, with its ``LOCAL_RANK`` where a launcher
    set one."""
    info = system_info()
    local_rank = os.environ.get("LOCAL_RANK", "")
    if local_rank.isdigit():
        info["local_rank"] = int(local_rank)
    return info


class Run:
    """One training run streaming to a trickscope server.

    Built by :func:`trickscope.init`. After setup no method raises into the training loop:
    failures are logged once per kind and counted in :attr:`incidents`.

    Under ``torch.distributed`` every rank holds a ``Run`` of the same id (:attr:`rank` says
    which). Rank 0 creates the run, sends its config and streams the per-layer statistics and
    the tricks' reports; every rank, rank 0 included, sends a small summary under ``rank/<r>/``
    (see :mod:`trickscope.rank_summary`), and ``log`` on rank ``r > 0`` files its metrics
    under ``rank/<r>/`` too.
    """

    def __init__(
        self,
        *,
        project: str,
        name: str | None,
        config: Mapping[str, Any] | None,
        tags: Sequence[str] | None,
        agent: AgentConfig,
        rank: Rank | None = None,
        run_id: str | None = None,
    ) -> None:
        if not isinstance(project, str) or not project.strip():
            raise ValueError(f"project={project!r} must be a non-empty string")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name={name!r} must be a string or None")
        if config is not None and not isinstance(config, Mapping):
            raise TypeError(f"config must be a mapping (e.g. a dict), got {type(config).__name__}")
        if isinstance(tags, str) or (
            tags is not None and not all(isinstance(tag, str) for tag in tags)
        ):
            raise TypeError(f"tags={tags!r} must be a list of strings")
        self.id = run_id or uuid.uuid4().hex
        self.rank = rank
        self._primary = rank is None or rank.primary
        self._log_prefix = "" if rank is None or rank.primary else f"rank/{rank.rank}/"
        # What the server cannot store is repaired here, so that the run is never refused.
        self.project = clean_text(project, MAX_NAME_CHARS)
        self.name = clean_text(name or default_name(self.id), MAX_NAME_CHARS)
        self.url = f"{agent.url}/runs/{self.id}"
        self.agent = agent
        self.incidents = Incidents()
        self.status: str | None = None
        self._watcher: Watcher | None = None
        self._diagnoser: Diagnoser | None = None
        self._summary: RankSummary | None = None
        self._log_count = 0
        self._metrics = MetricLog(self._log_prefix, self._emit_logged)
        self._handoff = Handoff()
        self._sender: Sender | None = None
        self._active = not agent.disabled
        if not self._active:
            return
        self._create = RunCreate(
            project=self.project,
            name=self.name,
            config=json_document(config or {}),
            tags=clean_names(list(tags or []), limit=MAX_TAG_CHARS, count=MAX_TAGS),
            system=json_document(system_info(rank)),
            started_at=time.time(),
        )
        # The run's creation goes first of all, queued before the sender thread starts.
        first: list[Request] = []
        if self._primary:
            first.append(Request("PUT", f"/api/v1/runs/{self.id}", dumps(self._create)))
        if rank is not None:  # which host and process each rank is (a straggler's, say)
            body = dumps(RankDeclare(system=json_document(rank_system_info())))
            first.append(Request("PUT", f"/api/v1/runs/{self.id}/ranks/{rank.rank}", body))
        self._sender = Sender(
            agent, self.id, self.incidents, rank=0 if rank is None else rank.rank, first=first
        )
        # What killed processes left in journal_dir: sent or named, once per process.
        leftovers.start(agent, run_id=self.id)
        atexit.register(self._at_exit)
        watch_sigterm(id(self), self.finish)
        if self._primary and not agent.quiet:
            announce_run(self.name, self.url, offline=agent.offline, journal_dir=agent.journal_dir)

    @property
    def reports_tricks(self) -> bool:
        """Whether the tricks built with this run send their reports: on rank 0 only, since
        the learning rate, decay and clipping are the same on every rank."""
        return self._primary

    def update_config(self, values: Mapping[str, Any]) -> None:
        """Merge ``values`` into the run's config (top-level keys replace) and send it.

        For configuration known only after :func:`trickscope.init`, such as the ``describe()``
        of the tricks built with this run. Rank 0 owns a distributed run's config: on other
        ranks this does nothing.
        """
        if not isinstance(values, Mapping):
            raise TypeError(f"values must be a mapping (e.g. a dict), got {type(values).__name__}")
        if not self._active or self._sender is None or not self._primary:
            return
        config = json_document({**self._create.config, **json_safe(dict(values))})
        self._create = dataclasses.replace(self._create, config=config)
        self._sender.request(Request("PUT", f"/api/v1/runs/{self.id}", dumps(self._create)))

    @property
    def sender(self) -> Sender | None:
        """The background sender (``None`` when disabled)."""
        return self._sender

    def watch(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        every: int = 10,
        start_step: int = 0,
        hist_every: int = 100,
        scaler: torch.amp.GradScaler | None = None,
        lr_every: int = 1,
        update_ratio: bool = True,
        scheduler: Any = None,
        ema: Any = None,
        total_steps: int | None = None,
        check_every: int = 1,
        scratch_bytes: int | None = None,
        update_sample: int = SAMPLE_ELEMENTS,
    ) -> None:
        """Report per-layer gradient and weight statistics every ``every`` optimizer steps.

        Hooks ``optimizer.step()`` (pre and post hooks, no patching). Each due step reports
        ``grad_norm``, ``grad_max``, ``grad_mean``, ``grad_std``, ``grad_zero_frac``,
        ``grad_nan``, ``grad_inf``, ``weight_norm``, ``weight_mean``, ``weight_std`` and
        ``update_ratio`` per parameter, ``grad_norm/total``, ``lr/group<i>`` and, with a
        ``scaler``, ``amp/scale``. Every ``hist_every`` steps it also sends 64-bin histograms
        ``grad_hist/<param>`` and ``weight_hist/<param>`` (NaN/Inf counted apart). Gradients are
        read at the optimizer step: after accumulation, after ``unscale_`` under AMP and after
        the DDP all-reduce. A parameter without a gradient has no gradient points that step.
        Calling ``watch`` again replaces the previous hooks. Under ``torch.distributed`` the
        per-layer statistics come from rank 0, and every rank adds its summary (``rank/<r>/``:
        ``grad_norm``, ``weight_norm``, ``step_time``, ``data_time``) on the same cadence.

        Args:
            model: Its ``named_parameters()`` names the series; inside a DDP, DataParallel or
                ``torch.compile`` wrapper, those of the module wrapped (no ``module.`` or
                ``_orig_mod.`` prefix).
            optimizer: Its ``step()`` calls define the step. A step that ``GradScaler`` skips
                (Inf/NaN gradients) never calls it, so it is not counted.
            every: Sampling period of the scalar statistics, in optimizer steps.
            start_step: The step of the first ``optimizer.step()`` call (when resuming).
            hist_every: Sampling period of the histograms; 0 turns them off.
            scaler: The AMP ``GradScaler`` in use, whose scale is then reported.
            lr_every: Period of the ``lr/group<i>`` report, read from ``optimizer.param_groups``
                so any scheduler shows (host numbers only; 0: only with the statistics).
            update_ratio: Report ``update_ratio`` (‖Δw‖ / ‖w‖), from a fixed strided sample of
                ``update_sample`` elements per tensor kept from before the step (a tensor that
                small is taken whole); ``False`` skips it.
            scheduler: The LR scheduler; by default one driving ``optimizer`` is looked for in
                the calling frames.
            ema: The EMA model (``AveragedModel``, timm ``ModelEma*``, ``tricks.ModelEma``); by
                default one mirroring ``model`` is looked for in the calling frames.
            total_steps: The planned number of optimizer steps (else the scheduler's length).
            check_every: Period of the per-step check (global norms, clipping, the first
                non-finite weight or gradient), in optimizer steps.
            scratch_bytes: Cap of the device scratch buffer the statistics and histograms work
                in (default: ``TRICKSCOPE_SCRATCH_BYTES``, else 32 MiB and at most 1/256 of a
                GPU's memory). Larger means fewer kernel launches, smaller less memory.
            update_sample: Elements per tensor sampled for ``update_ratio``.

        Besides the statistics, ``watch`` sends the setup document and the default diagnosis
        of ``docs/diagnosis.md``: ``grad_norm/total`` (every step), ``grad_norm/total_preclip``,
        ``clip/observed``, ``accum/backward_passes``, ``sched/calls``; on due steps
        ``accum/loss_scale``, ``grad_dead_units/<param>``, ``opt/eps_dominance/<param>``,
        ``ema/*`` and ``drop_path/*``; and an agent finding at the first non-finite weight or
        gradient.

        Raises:
            TypeError: ``model``, ``optimizer`` or ``scaler`` has the wrong type.
            ValueError: ``every``, ``start_step``, ``hist_every``, ``lr_every``,
                ``total_steps``, ``check_every``, ``scratch_bytes`` or ``update_sample`` is out
                of range.
        """
        if total_steps is not None:
            check_int("total_steps", total_steps, 1)
        check_int("check_every", check_every, 1)
        watcher = Watcher(
            model,
            optimizer,
            every=every,
            start_step=start_step,
            emit=self._emit_stats,
            incidents=self.incidents,
            hist_every=hist_every,
            emit_hist=self._emit_hist,
            scaler=scaler,
            lr_every=lr_every,
            emit_host=self._emit_host,
            update_ratio=update_ratio,
            scratch_bytes=scratch_bytes,
            update_sample=update_sample,
        )
        if not self._active or self._sender is None:
            watcher.close()
            return
        self._close_hooks()
        if self.rank is not None:
            self._summary = RankSummary(
                model,
                optimizer,
                rank=self.rank.rank,
                every=every,
                start_step=start_step,
                emit=self._emit,
                incidents=self.incidents,
            )
        if not self._primary:
            watcher.close()  # built all the same: every rank checks its arguments alike
            return
        self._watcher = watcher
        names = clean_names(list(watcher.names), limit=MAX_SERIES_CHARS, count=MAX_LAYERS)
        layers = dumps(LayersDeclare(layers=names))
        self._sender.request(Request("PUT", f"/api/v1/runs/{self.id}/layers", layers))
        try:
            self._diagnoser = Diagnoser(
                model,
                optimizer,
                every=every,
                start_step=start_step,
                hist_every=hist_every,
                emit=self._emit_stats,
                emit_host=self._emit_host,
                send_setup=self._send_setup,
                send_finding=lambda finding: self.report_findings([finding]),
                incidents=self.incidents,
                scaler=scaler,
                scheduler=scheduler,
                ema=ema,
                total_steps=total_steps,
                check_every=check_every,
                frame=sys._getframe(1),
            )
        except Exception as exc:  # the statistics still run without the diagnosis
            self.incidents.error("diagnosis setup", exc)

    def _send_setup(self, setup: dict[str, Any]) -> None:
        if self._sender is not None and self._primary:
            body = dumps(SetupDeclare(setup=json_safe(setup)))
            # Also sent from the optimizer hooks (a scheduler found later): a short wait at most.
            self._sender.request(Request("PUT", f"/api/v1/runs/{self.id}/setup", body), 0.5)

    def report_findings(self, findings: Sequence[AgentFinding]) -> None:
        """Send health findings made in this process (``PUT .../findings``, merged on the
        server by check and layer). Rank 0 speaks for the run: elsewhere this does nothing."""
        if not self._active or self._sender is None or not self._primary:
            return
        try:
            body = dumps(FindingsDeclare(findings=list(findings)))
            self._sender.request(Request("PUT", f"/api/v1/runs/{self.id}/findings", body), 0.5)
        except Exception as exc:
            self.incidents.error("findings", exc)

    def log(self, metrics: Mapping[str, float | Tensor], step: int | None = None) -> None:
        """Record scalar metrics at ``step`` without waiting for the device.

        Values are Python numbers or one-element tensors (e.g. a loss): tensors are stacked and
        copied asynchronously with the per-layer statistics, never read on this thread.

        Args:
            metrics: ``{"loss/train": loss, "lr": 0.1}``; names are ``/``-separated.
            step: Defaults to the watched optimizer's current step (call ``log`` after
                ``optimizer.step()``), or to the number of earlier ``log`` calls without
                ``watch``.

        On rank ``r > 0`` of a distributed job the metrics are filed under ``rank/<r>/``.
        """
        if not self._active:
            return
        try:
            self._log(metrics, step)
        except (TypeError, ValueError, OverflowError) as exc:  # a value it cannot take
            self.incidents.error("log", exc, traceback=False)
        except Exception as exc:
            self.incidents.error("log", exc)

    def _log(self, metrics: Mapping[str, float | Tensor], step: int | None) -> None:
        if step is None:
            hooks = self._watcher or self._summary
            step = hooks.step if hooks is not None else self._log_count
        elif type(step) is not int:
            if isinstance(step, bool) or not isinstance(step, numbers.Integral):
                raise TypeError(f"step={step!r} must be an int or None")
            step = int(step)
        self._log_count += 1
        sender = self._sender
        if sender is None:
            return
        wall = time.time()
        if len(metrics) == 1 and not self._log_prefix:  # the common case, in as few calls
            ((key, value),) = metrics.items()
            if type(value) is float and type(key) is str:
                sender.scalars.add_point(key, step, value, wall)
                return
        self._metrics.add(sender.scalars, metrics, step, wall)

    def _emit(
        self,
        step: int,
        keys: Sequence[str],
        values: Tensor,
        host: list[tuple[str, float]],
        wall: float | None = None,
        bulk: bool = False,
        layout: Layout | None = None,
    ) -> None:
        """Hand device ``values`` to the sender. ``watch``'s optional statistics (``bulk``) are
        thinned when every pinned buffer is in flight; logged values never are: the sender
        thread then copies them out itself."""
        wall = time.time() if wall is None else wall
        if bulk:
            parcel = self._handoff.ship(values)
            if parcel is None:
                self.incidents.thin("all pinned buffers in flight")
                if host:
                    self._emit_host(step, host, wall)
                return
        else:
            parcel = self._handoff.ship_or_hold(values)
        self._submit(Sample(step, wall, keys, parcel, host, bulk=bulk, layout=layout))

    def _emit_logged(
        self, step: int, keys: Sequence[str], values: Tensor, wall: float, layout: Layout | None
    ) -> None:
        self._emit(step, keys, values, [], wall, layout=layout)

    def _emit_stats(
        self, step: int, keys: Sequence[str], values: Tensor, host: list[tuple[str, float]]
    ) -> None:
        """``watch``'s statistics: in the bulk batches (``stats_flush_secs``); ``host`` (the
        learning rates) goes out with the logged points."""
        self._emit(step, keys, values, host, bulk=True)

    def _emit_host(
        self, step: int, host: list[tuple[str, float]], wall: float | None = None
    ) -> None:
        if self._sender is not None and host:
            wall = time.time() if wall is None else wall
            try:
                self._sender.log_points(step, wall, host)
            except Exception as exc:
                self.incidents.error("log", exc)

    def _emit_hist(self, step: int, keys: Sequence[str], bins: int, values: Tensor) -> None:
        parcel = self._handoff.ship(values)
        if parcel is None:
            self.incidents.thin("all pinned buffers in flight")
            return
        self._submit(Sample(step, time.time(), keys, parcel, bins=bins))

    def _submit(self, sample: Sample) -> None:
        if self._sender is not None:
            self._sender.submit(sample)

    def finish(self, status: str = "finished", timeout: float | None = None) -> None:
        """Stop watching, flush everything and mark the run ``status``; later calls do nothing.

        Args:
            status: ``"finished"``, ``"failed"`` or ``"crashed"``.
            timeout: Seconds to wait for the server before spilling the rest to the journal
                (default: ``AgentConfig.finish_timeout``).
        """
        if status not in ("finished", "failed", "crashed"):
            raise ValueError(f"status={status!r}; use 'finished', 'failed' or 'crashed'")
        if self.status is not None:
            return
        self.status = status
        self._close_hooks()
        if not self._active or self._sender is None:
            return
        atexit.unregister(self._at_exit)
        unwatch_sigterm(id(self))
        timeout = self.agent.finish_timeout if timeout is None else timeout
        if self._primary:  # rank 0 speaks for the job
            body = dumps(RunFinish(status=status, ended_at=time.time()))
            finish = Request("POST", f"/api/v1/runs/{self.id}/finish", body)
            self._sender.request(finish, timeout, after_points=True)
        self._sender.close(timeout)

    def _close_hooks(self) -> None:
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None
        if self._diagnoser is not None:
            self._diagnoser.close()
            self._diagnoser = None
        if self._summary is not None:
            self._summary.close()
            self._summary = None

    def _at_exit(self) -> None:
        # sys.last_value is set when an uncaught exception ended the program.
        self.finish("crashed" if hasattr(sys, "last_value") else "finished")

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.finish("finished" if exc_type is None else "failed")

    def __repr__(self) -> str:
        return f"Run(id={self.id!r}, project={self.project!r}, url={self.url!r})"
