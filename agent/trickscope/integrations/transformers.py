"""Hugging Face Trainer: ``Trainer(..., callbacks=[TrickscopeCallback(project="x")])``.

Needs ``transformers`` (``pip install 'trickscope[transformers]'``). The callback reads, in
``on_train_begin``, the Trainer's model, optimizer and LR scheduler (under accelerate's wrappers),
``max_grad_norm``, ``gradient_accumulation_steps`` and ``max_steps``; attaches ``run.watch``; logs
what the Trainer logs (``on_log``: ``loss`` as ``train/loss``, ``eval_loss`` as ``eval/loss``, the
naming of the Trainer's W&B callback), feeds the logged ``grad_norm``, which the Trainer measures
before clipping, as the clip observation (``clip/pre_norm``, ``clip/clipped``, ...), and finishes
the run in ``on_train_end``.

``report_to="trickscope"`` is not offered: transformers (5.x) resolves ``report_to`` names from
the module-level dict ``transformers.integrations.integration_utils.INTEGRATION_TO_CALLBACK`` and
rejects any other name, with no public way to register one. Adding an entry means mutating
transformers' module state at import time, which is patching; ``callbacks=[...]`` is the
supported way to add a third-party callback and needs nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

try:
    from transformers import TrainerCallback
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "trickscope.integrations.transformers needs transformers: "
        "pip install 'trickscope[transformers]'"
    ) from exc

import torch

from trickscope._incidents import Incidents
from trickscope.integrations._hooks import (
    guarded,
    inner_optimizer,
    inner_scheduler,
    last_step,
    numeric_items,
)

__all__ = ["TrickscopeCallback"]

# The training arguments that shape the optimisation, sent as the run's config (all of
# TrainingArguments is over a hundred keys, most of them about I/O).
TRAINING_ARGS = (
    "learning_rate",
    "weight_decay",
    "adam_beta1",
    "adam_beta2",
    "adam_epsilon",
    "max_grad_norm",
    "num_train_epochs",
    "max_steps",
    "lr_scheduler_type",
    "warmup_steps",
    "warmup_ratio",
    "gradient_accumulation_steps",
    "per_device_train_batch_size",
    "optim",
    "bf16",
    "fp16",
    "seed",
)
_PREFIXES = {"eval_": "eval/", "test_": "test/"}


class TrickscopeCallback(TrainerCallback):
    """Streams a Hugging Face ``Trainer`` run to trickscope.

    Example:
        >>> trainer = Trainer(model, args, train_dataset=data, callbacks=[TrickscopeCallback()])
    """

    def __init__(
        self,
        project: str = "huggingface",
        *,
        run: Any = None,
        name: str | None = None,
        config: Mapping[str, Any] | None = None,
        tags: Sequence[str] | None = None,
        every: int = 10,
        hist_every: int = 100,
        **settings: Any,
    ) -> None:
        """
        Args:
            project: The run's project (ignored when ``run`` is given).
            run: A run already started with ``trickscope.init``; the callback then neither starts
                nor finishes it.
            name: The run's name (default: the script's name and the run id).
            config: Extra config, merged over the training arguments and the model's config.
            tags: The run's tags.
            every: ``watch``'s sampling period, in optimizer steps.
            hist_every: ``watch``'s histogram period; 0 turns histograms off.
            **settings: :class:`trickscope.AgentConfig` fields (``url``, ``token``, ...).
        """
        self.project = project
        self.run = run
        self._owns_run = run is None
        self._name = name
        self._config = dict(config or {})
        self._tags = list(tags or [])
        self._every = every
        self._hist_every = hist_every
        self._settings = settings
        self._own_incidents = Incidents()
        self._max_grad_norm = 0.0
        self._start = 0

    @property
    def incidents(self) -> Incidents:
        """Where failures are counted: the run's, once there is one."""
        run_incidents = getattr(self.run, "incidents", None)
        return run_incidents if isinstance(run_incidents, Incidents) else self._own_incidents

    @guarded("on_train_begin")
    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        model = kwargs.get("model")
        self._max_grad_norm = float(getattr(args, "max_grad_norm", 0.0) or 0.0)
        self._start = int(state.global_step)
        config = {
            **training_config(args, state),
            **model_config(model),
            **self._config,
        }
        if self.run is None:
            import trickscope

            self.run = trickscope.init(
                project=self.project,
                name=self._name,
                config=config,
                tags=self._tags,
                **self._settings,
            )
        else:
            self.run.update_config({"transformers": config})
        optimizer = inner_optimizer(kwargs.get("optimizer"))
        if not isinstance(model, torch.nn.Module) or optimizer is None:
            return
        scheduler = kwargs.get("lr_scheduler")
        max_steps = int(getattr(state, "max_steps", 0) or 0)
        self.run.watch(
            model,
            optimizer,
            every=self._every,
            hist_every=self._hist_every,
            start_step=self._start,
            scheduler=None if scheduler is None else inner_scheduler(scheduler),
            total_steps=max_steps if max_steps > 0 else None,
        )

    @guarded("on_log")
    def on_log(
        self,
        args: Any,
        state: Any,
        control: Any,
        logs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if self.run is None or self.run.status is not None or not logs:
            return  # none yet, or finished (an evaluate() after train())
        step = last_step(int(state.global_step), self._start)
        metrics = numeric_items({rename(key): value for key, value in logs.items()})
        if metrics:
            self.run.log(metrics, step=step)
        grad_norm = logs.get("grad_norm")
        if self._max_grad_norm > 0 and isinstance(grad_norm, (int, float, torch.Tensor)):
            from trickscope.tricks.clip import log_clip

            # The Trainer logs the norm clip_grad_norm_ returned: the one before clipping.
            log_clip(self.run, torch.as_tensor(grad_norm), self._max_grad_norm, step)

    @guarded("on_train_end")
    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._owns_run and self.run is not None:
            self.run.finish("finished")


def rename(key: str) -> str:
    """The Trainer's log keys as series names: ``eval_loss`` → ``eval/loss``, ``loss`` →
    ``train/loss`` (the naming of the Trainer's own W&B callback)."""
    for prefix, group in _PREFIXES.items():
        if key.startswith(prefix):
            return group + key[len(prefix) :]
    return "train/" + key


def training_config(args: Any, state: Any) -> dict[str, Any]:
    """The optimisation's settings from ``TrainingArguments`` and the planned steps."""
    config: dict[str, Any] = {}
    for key in TRAINING_ARGS:
        value = getattr(args, key, None)
        if value is not None:
            config[key] = getattr(value, "value", value)  # enums by their value
    config["planned_steps"] = getattr(state, "max_steps", None)
    config["world_size"] = getattr(args, "world_size", 1)
    return config


def model_config(model: Any) -> dict[str, Any]:
    """The model's architecture and the config keys that differ from its class's defaults."""
    config = getattr(model, "config", None)
    if config is None:
        return {"model": type(model).__name__} if model is not None else {}
    diff = config.to_diff_dict() if hasattr(config, "to_diff_dict") else {}
    diff = {k: v for k, v in diff.items() if not k.startswith("_") and k != "transformers_version"}
    return {"model": type(model).__name__, "model_config": diff}
