"""Cheap probes behind ``watch``'s default diagnosis (``docs/diagnosis.md`` §2).

Each module measures one thing as device ops on the training thread and leaves the reading to
the caller: :mod:`sentinel` (backward passes and the clip coefficient), :mod:`loss_scale`
(∂loss/∂logits of a softmax cross-entropy), :mod:`drop_path` (realised drops and whether a
dropped block still has its residual), :mod:`eval_mode` (DropPath still dropping in eval),
:mod:`batchnorm` (the samples BatchNorm statistics come from), :mod:`due` (dead units, eps
dominance, the EMA), and :mod:`ring` (the pinned ring the per-step check vector travels in,
polled, never waited on).
"""
