"""Instrumented training tricks that report their own state through a metric sink.

Each trick is a pure function plus a small object, takes an optional ``run`` (anything with
``log(metrics, step)``, e.g. ``trickscope.Run``) and reports 0-d tensors, never syncing.
"""

from trickscope.tricks._sink import Finding, MetricSink
from trickscope.tricks.accumulate import GradientAccumulator
from trickscope.tricks.clip import clip_grad_norm, clip_grad_value, log_clip
from trickscope.tricks.drop_path import DropPath, DropPathMonitor, drop_path, drop_path_rates
from trickscope.tricks.ema import ModelEma, ema_distance, ema_module, report_ema
from trickscope.tricks.evaluate import evaluate_raw_and_ema
from trickscope.tricks.optim import (
    OptimizerReporter,
    build_optimizer,
    eps_dominance,
    report_hyperparameters,
)
from trickscope.tricks.param_groups import (
    check_weight_decay,
    describe_param_groups,
    param_groups_weight_decay,
    report_weight_decay,
    weight_decay_kind,
)
from trickscope.tricks.schedule import WarmupDecay, lr_at, recommended_warmup_steps

__all__ = [
    "DropPath",
    "DropPathMonitor",
    "Finding",
    "GradientAccumulator",
    "MetricSink",
    "ModelEma",
    "OptimizerReporter",
    "WarmupDecay",
    "build_optimizer",
    "check_weight_decay",
    "clip_grad_norm",
    "clip_grad_value",
    "describe_param_groups",
    "drop_path",
    "drop_path_rates",
    "ema_distance",
    "ema_module",
    "eps_dominance",
    "evaluate_raw_and_ema",
    "log_clip",
    "lr_at",
    "param_groups_weight_decay",
    "recommended_warmup_steps",
    "report_ema",
    "report_hyperparameters",
    "report_weight_decay",
    "weight_decay_kind",
]
