"""Trick-aware health checks: read a run's numbers and say what went wrong, where and when.

Each rule is a small function of a :class:`RunView` (the run's config, setup document, declared
layers, series summaries and a way to read a series) registered with :func:`rule`; it yields
:class:`Finding` objects that name the step and the layer, say why it matters and what to try,
or raises :class:`NotApplicable` saying why it cannot judge this run. The thresholds are rules of
thumb from the sources in TRICKS.md, kept as named constants in each rule's module so each can be
argued with. docs/diagnosis.md, section 5, lists the rules.
"""

# The rule modules register themselves on import; this order is the order of /health's checks.
# isort: off
from trickscope_server.services.health import (  # noqa: F401 - imported to register
    agent,
    nonfinite,
    gradients,
    dead,
    updates,
    loss,
    clipping,
    schedule,
    weight_decay,
    ema,
    eps,
    accumulation,
    drop_path,
    drop_path_eval,
    batchnorm,
    train_mode,
    softmax_twice,
    init_scale,
    distributed,
)

# isort: on
from trickscope_server.services.health.engine import CheckStatus, Diagnosis, diagnose
from trickscope_server.services.health.model import (
    RULES,
    Finding,
    NotApplicable,
    Rule,
    RunView,
    Summary,
    rule,
)
from trickscope_server.services.health.view import StoredRun, diagnose_run, health_report

__all__ = [
    "RULES",
    "CheckStatus",
    "Diagnosis",
    "Finding",
    "NotApplicable",
    "Rule",
    "RunView",
    "StoredRun",
    "Summary",
    "diagnose",
    "diagnose_run",
    "health_report",
    "rule",
]
