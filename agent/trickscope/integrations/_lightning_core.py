"""The Lightning callback's work, shared by the ``lightning`` and ``pytorch_lightning`` classes.

Hooks used (Lightning 2.x):

- ``setup("fit")``: start the run (``trickscope.init``) unless one was given, with the
  LightningModule's ``hparams`` and the trainer's settings as config.
- ``on_fit_start`` (the optimizers exist): ``run.watch`` the LightningModule and its first
  optimizer, with the scheduler of ``trainer.lr_scheduler_configs``, the AMP scaler of the
  precision plugin and ``trainer.estimated_stepping_batches`` as the planned steps. The training
  closure is evaluated before ``watch``'s hooks (see :mod:`._closure`).
- ``on_before_optimizer_step`` (after backward and unscaling, before Lightning clips): the
  pre-clip global gradient norm, reported like ``tricks.log_clip``.
- ``on_train_batch_end``: the step values ``self.log`` sends to loggers, once per optimizer
  step; the epoch values (training epoch end, validation end) where Lightning hands them to its
  loggers (see :mod:`._lightning_logged`). All as tensors (no ``.item()``), at the last
  optimizer step, none during the sanity check.
- ``on_fit_end`` / ``on_exception``: finish the run (``failed`` on an exception).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from trickscope._incidents import Incidents
from trickscope.integrations._closure import evaluate_closure_first
from trickscope.integrations._hooks import guarded, last_step
from trickscope.integrations._lightning_logged import EpochValuesTap, logged_now

logger = logging.getLogger("trickscope")


class LightningObserver:
    """Callback body; combined with the framework's ``Callback`` class in each module."""

    def __init__(
        self,
        project: str = "lightning",
        *,
        run: Any = None,
        name: str | None = None,
        config: Mapping[str, Any] | None = None,
        tags: Sequence[str] | None = None,
        every: int = 10,
        hist_every: int = 100,
        log_metrics: bool = True,
        **settings: Any,
    ) -> None:
        """
        Args:
            project: The run's project (ignored when ``run`` is given).
            run: A run already started with ``trickscope.init``; the callback then neither starts
                nor finishes it.
            name: The run's name (default: the script's name and the run id).
            config: Extra config, merged over the LightningModule's ``hparams``.
            tags: The run's tags.
            every: ``watch``'s sampling period, in optimizer steps.
            hist_every: ``watch``'s histogram period; 0 turns histograms off.
            log_metrics: Send what ``self.log`` logs.
            **settings: :class:`trickscope.AgentConfig` fields (``url``, ``token``, ...).
        """
        super().__init__()
        self.project = project
        self.run = run
        self._owns_run = run is None
        self._name = name
        self._config = dict(config or {})
        self._tags = list(tags or [])
        self._every = every
        self._hist_every = hist_every
        self._log_metrics = log_metrics
        self._settings = settings
        self._own_incidents = Incidents()
        self._handles: list[Any] = []
        self._optimizer: torch.optim.Optimizer | None = None
        self._logged_at = -1  # global_step of the last training batch whose metrics were sent
        self._epoch_tap: EpochValuesTap | None = None

    @property
    def incidents(self) -> Incidents:
        """Where failures are counted: the run's, once there is one."""
        run_incidents = getattr(self.run, "incidents", None)
        return run_incidents if isinstance(run_incidents, Incidents) else self._own_incidents

    # -- run ---------------------------------------------------------------------------------

    @guarded("setup")
    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage != "fit":
            return
        settings = trainer_settings(trainer)
        if self.run is None or (self._owns_run and self.run.status is not None):
            # A first fit, or another fit with this callback after its run finished.
            import trickscope

            config = {**hparams(pl_module), **self._config, "lightning": settings}
            self.run = trickscope.init(
                project=self.project,
                name=self._name,
                config=config,
                tags=self._tags,
                **self._settings,
            )
        else:
            self.run.update_config({"lightning": settings})

    @guarded("on_fit_start")
    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        if self.run is None:
            return
        self._logged_at = int(trainer.global_step)
        if self._log_metrics and self._epoch_tap is None:
            try:
                self._epoch_tap = EpochValuesTap(
                    trainer, lambda values: self._send(trainer, values), self.incidents
                )
            except AttributeError:  # another Lightning: epoch values read in the hooks below
                logger.info("trickscope: epoch values read at the epoch-end hooks")
        optimizers = list(trainer.optimizers)
        if not optimizers:
            return
        if len(optimizers) > 1:
            logger.info("trickscope: watching the first of %d optimizers", len(optimizers))
        optimizer = optimizers[0]
        handle = evaluate_closure_first(optimizer)
        if handle is not None:
            self._handles.append(handle)
        self._optimizer = optimizer
        # The schedulers exist only now (configure_optimizers runs after setup).
        settings = {**trainer_settings(trainer), "lr_schedulers": scheduler_configs(trainer)}
        self.run.update_config({"lightning": settings})
        self.run.watch(
            pl_module,
            optimizer,
            every=self._every,
            hist_every=self._hist_every,
            start_step=int(trainer.global_step),
            scheduler=scheduler_of(trainer, optimizer),
            scaler=getattr(trainer.precision_plugin, "scaler", None),
            total_steps=planned_steps(trainer),
        )

    @guarded("on_fit_end")
    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        self._remove_hooks()
        if self._owns_run and self.run is not None:
            self.run.finish("finished")

    @guarded("on_exception")
    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._remove_hooks()
        if self._owns_run and self.run is not None:
            self.run.finish("failed")

    @guarded("teardown")
    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self._remove_hooks()

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if self._epoch_tap is not None:
            self._epoch_tap.remove()
            self._epoch_tap = None

    # -- clipping ----------------------------------------------------------------------------

    @guarded("on_before_optimizer_step")
    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        clip = trainer.gradient_clip_val
        watched = self._optimizer
        if self.run is None or watched is None or optimizer is not watched or not clip or clip <= 0:
            return
        grads = [p.grad for g in watched.param_groups for p in g["params"] if p.grad is not None]
        if not grads:
            return
        # One foreach norm on the device, read later by the sender with the logged values.
        total = torch.nn.utils.get_total_norm(grads, 2.0, error_if_nonfinite=False)
        step = int(trainer.global_step)  # the step about to be taken
        algorithm = str(trainer.gradient_clip_algorithm or "norm").lower()
        if algorithm.endswith("norm"):
            from trickscope.tricks.clip import log_clip

            log_clip(self.run, total, float(clip), step)
        else:  # by value: the norm is still what clipping hides
            self.run.log({"clip/pre_norm": total, "clip/value_threshold": float(clip)}, step)

    # -- logged metrics ----------------------------------------------------------------------

    def _send(self, trainer: Any, values: dict[str, float | torch.Tensor]) -> None:
        """``values`` at the last optimizer step, unless there is no run to take them (none
        yet, or finished: a ``validate()`` after ``fit()``) or Lightning is sanity checking."""
        run = self.run
        if run is None or run.status is not None or not self._log_metrics:
            return
        if trainer.sanity_checking or not values:
            return
        run.log(values, step=last_step(int(trainer.global_step)))

    @guarded("on_train_batch_end")
    def on_train_batch_end(self, trainer: Any, pl_module: Any, *args: Any, **kwargs: Any) -> None:
        # Like Lightning's loggers: once per optimizer step, not per accumulated micro-batch.
        global_step = int(trainer.global_step)
        if global_step != self._logged_at:
            self._logged_at = global_step
            if self.run is not None and self._log_metrics:
                self._send(trainer, logged_now(trainer))

    # Without the tap (a Lightning whose logger connector differs), what is known at these
    # hooks; the LightningModule's own epoch-end values come later and are missed.

    @guarded("on_train_epoch_end")
    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self._epoch_tap is None and self.run is not None and self._log_metrics:
            self._send(trainer, logged_now(trainer))

    @guarded("on_validation_end")
    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if self._epoch_tap is None and self.run is not None and self._log_metrics:
            self._send(trainer, logged_now(trainer))


def hparams(pl_module: Any) -> dict[str, Any]:
    """The LightningModule's ``save_hyperparameters()`` values, as a plain dict."""
    values = getattr(pl_module, "hparams", None)
    try:
        return dict(values) if values else {}
    except (TypeError, ValueError):
        return {}


def trainer_settings(trainer: Any) -> dict[str, Any]:
    """The trainer settings that shape the optimisation, for the run's config."""
    settings: dict[str, Any] = {
        "max_epochs": trainer.max_epochs,
        "max_steps": trainer.max_steps,
        "accumulate_grad_batches": trainer.accumulate_grad_batches,
        "gradient_clip_val": trainer.gradient_clip_val,
        "gradient_clip_algorithm": _text(trainer.gradient_clip_algorithm),
        "precision": _text(trainer.precision),
        "world_size": trainer.world_size,
        "strategy": type(trainer.strategy).__name__,
    }
    return settings


def scheduler_configs(trainer: Any) -> list[dict[str, Any]]:
    """Each LR scheduler with the interval and frequency Lightning steps it at."""
    return [
        {
            "class": type(config.scheduler).__name__,
            "interval": config.interval,
            "frequency": config.frequency,
        }
        for config in getattr(trainer, "lr_scheduler_configs", None) or []
    ]


def scheduler_of(trainer: Any, optimizer: torch.optim.Optimizer) -> Any:
    """The scheduler of ``trainer.lr_scheduler_configs`` driving ``optimizer``, if any."""
    for config in getattr(trainer, "lr_scheduler_configs", None) or []:
        if getattr(config.scheduler, "optimizer", None) is optimizer:
            return config.scheduler
    return None


def planned_steps(trainer: Any) -> int | None:
    """Optimizer steps the fit will take, where Lightning can tell (max_steps or epochs)."""
    try:  # sizes the train loader; one without a length leaves the plan unknown
        estimated = trainer.estimated_stepping_batches
    except Exception:
        return None
    if isinstance(estimated, (int, float)) and math.isfinite(estimated) and estimated >= 1:
        return int(estimated)
    return None


def _text(value: Any) -> Any:
    if value is None or isinstance(value, (int, float, str, bool)):
        return value
    return str(getattr(value, "value", value))
