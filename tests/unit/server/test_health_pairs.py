"""Every health rule beside a healthy input it must judge and find nothing in, and the smallest
change to that input that makes it fire: a rule that fires on everything, or on nothing, fails
one of the two."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from tests.unit.server.health_view import Run, adam_setup, healthy_run
from trickscope_server.services.health import RULES, diagnose

STEPS = 400


def _decay_split() -> Run:
    """AdamW decaying the weight matrices only: norm gains and biases in a group without decay."""
    run = healthy_run()
    params = [("conv.weight", "weight"), ("conv.bias", "bias"), ("norm.weight", "norm"),
              ("head.weight", "weight")]  # fmt: skip
    run.setup = adam_setup(params, betas=(0.9, 0.99), weight_decay=0.05, planned=STEPS)
    groups = run.setup["optimizer"]["groups"]
    groups.append({**groups[0], "index": 1, "weight_decay": 0.0})
    for param in run.setup["params"]:
        if param["kind"] in ("bias", "norm"):
            param["group"] = 1
    return run


def _accumulating() -> Run:
    """Four backward passes per step, each micro-batch's loss divided by four."""
    run = healthy_run()
    run.values("accum/backward_passes")[:] = 4.0
    run.add("accum/loss_scale", np.full(STEPS, 0.25))
    return run


def _drop_path(rates: list[float], unresidual: float = 0.0) -> Run:
    """DropPath on four residual branches, with measured drops and the share of zeroed outputs."""
    run = healthy_run()
    run.setup["drop_path"] = [
        {"module": f"blocks.{i}.drop_path", "class": "DropPath", "rate": rate,
         "parent": f"blocks.{i}"}
        for i, rate in enumerate(rates)
    ]  # fmt: skip
    for i in range(len(rates)):
        run.add(f"drop_path/realised/blocks.{i}", [0.0, 0.1, 0.2, 0.1], [0, 10, 20, 30])
        share = unresidual if i == 2 else 0.0
        run.add(f"drop_path/unresidual/blocks.{i}", [0.0, share, share, share], [0, 10, 20, 30])
    return run


def _batchnorm(size: float = 32.0) -> Run:
    """BatchNorm measured on due steps: the fewest samples one forward normalised over."""
    run = healthy_run()
    run.add("bn/batch_size/stem.1", np.full(STEPS // 10, size), np.arange(0, STEPS, 10))
    return run


def _evaluated(changed: float = 0.0) -> Run:
    """DropPath models evaluated twice: the share of eval forwards that changed the input."""
    run = _drop_path([0.0, 0.05, 0.1, 0.15])
    for i in range(4):
        share = changed if i == 1 else 0.0
        run.add(f"drop_path/eval_changed/blocks.{i}.drop_path", [0.0, share], [199, 399])
    return run


def _ranks(world_size: int = 3, steps: int = 50) -> Run:
    """Replicas in agreement (the same norms on every rank), similar input waits."""
    rng = np.random.default_rng(1)
    run = healthy_run(steps)
    grads, weights = 1 + rng.random(steps), 10 + rng.random(steps)
    for rank in range(world_size):
        run.add(f"rank/{rank}/grad_norm", grads.copy())
        run.add(f"rank/{rank}/weight_norm", weights.copy())
        run.add(f"rank/{rank}/step_time", 0.2 + 0.01 * rng.random(steps))
        run.add(f"rank/{rank}/data_time", 0.01 + 0.002 * rng.random(steps))
    return run


def _with(build: Callable[[], Run], change: Callable[[Run], object]) -> Callable[[], Run]:
    def broken() -> Run:
        run = build()
        change(run)
        return run

    return broken


def _agent_finding(run: Run) -> None:
    run.agent_findings = {
        "nonfinite-gradient|head.weight": {
            "check": "nonfinite-gradient", "severity": "error", "title": "t", "why": "w",
            "remedy": "r", "step": 7, "layer": "head.weight", "evidence": {},
        }
    }  # fmt: skip


def _set(name: str, where: slice | int, value: object) -> Callable[[Run], None]:
    def change(run: Run) -> None:
        run.values(name)[where] = value

    return change


def _vanished(run: Run) -> None:
    for layer in run.layers:  # every layer alike: vanished, not spread over magnitudes
        run.values(f"grad_norm/{layer}")[:] = 1e-9


def _no_gradient(run: Run) -> None:
    del run.columns["grad_norm/norm.weight"]


def _norm_decayed(run: Run) -> None:
    for param in run.setup["params"]:
        if param["name"] == "norm.weight":
            param["group"] = 0


def _coupled(run: Run) -> None:
    run.setup["optimizer"]["class"] = "Adam"
    run.setup["optimizer"]["groups"][0]["decoupled"] = False


def _strong_decay(run: Run) -> None:
    run.setup["optimizer"]["groups"][0]["weight_decay"] = 50.0  # lr 1e-3: 5 % a step
    run.values("weight_norm/head.weight")[:] = np.geomspace(1.0, 0.05, STEPS)  # and it shows


def _cleared() -> Run:
    """Gradients measured as cleared by zero_grad before every step's first backward."""
    return healthy_run().add("grad/carried_over", np.zeros(STEPS))


def _in_training_mode() -> Run:
    """Dropout and BatchNorm in training mode on every due step."""
    steps = np.arange(0, STEPS, 10)
    run = healthy_run()
    run.add("mode/dropout_training", np.ones(steps.size), steps)
    return run.add("mode/batchnorm_training", np.ones(steps.size), steps)


def _evaluated_in_eval_mode() -> Run:
    """No forward without gradients in training mode between any two due steps."""
    steps = np.arange(0, STEPS, 10)
    return healthy_run().add("mode/nograd_training_forwards", np.zeros(steps.size), steps)


def _logits_into_cross_entropy() -> Run:
    """A softmax cross-entropy measured over the output on every due step, given logits."""
    steps = np.arange(0, STEPS, 10)
    return healthy_run().add("loss/softmax_inputs", np.zeros(steps.size), steps)


def _initialised() -> Run:
    """A conv kernel and a linear layer at He and PyTorch-default scales (gain √2 and 0.58)."""
    run = healthy_run()
    shapes = {"conv.weight": ([16, 3, 3, 3], "Conv2d", 27), "head.weight": ([10, 64], "Linear", 64)}
    gains = {"conv.weight": 2**0.5, "head.weight": 0.58}
    for param in run.setup["params"]:
        if param["name"] in shapes:
            param["shape"], param["module"], fan_in = shapes[param["name"]]
            run.add(
                f"weight_std/{param['name']}", np.full(STEPS, gains[param["name"]] / fan_in**0.5)
            )
    return run


def _left_in_eval(run: Run) -> None:
    for kind in ("dropout", "batchnorm"):
        run.values(f"mode/{kind}_training")[20:] = 0.0  # model.eval() at step 200, for good


def _stepped_warmup(run: Run) -> None:
    levels = np.repeat([1e-4, 3e-4, 6e-4, 1e-3], 25)
    run.values("lr/group0")[:] = np.concatenate([levels, np.full(STEPS - 100, 1e-3)])


def _clipped_rarely(threshold: float = 1.0) -> Run:
    """clip_grad_norm_ as a safety net: max_norm 1.0 over pre-clip norms of ~0.2, never reached
    in this run (5x the largest: a net, not dead code)."""
    run = healthy_run()
    run.values("clip/observed")[:] = 0.0
    run.add("grad_norm/total_preclip", run.values("grad_norm/total").copy())
    run.add("clip/threshold", np.full(STEPS, threshold))
    return run


def _clipped_under_scaler(before_unscale: float = 0.0) -> Run:
    """Clipping at 1.0 under a GradScaler at 65536, each step's coefficient decided."""
    run = _clipped_rarely()
    run.add("amp/scale", np.full(STEPS, 65536.0))
    run.add("clip/before_unscale", np.full(STEPS, before_unscale))
    return run


def _slow_rank(run: Run) -> None:
    run.values("rank/2/data_time")[:] += 0.1


def _rank_differs(run: Run) -> None:
    run.values("rank/1/grad_norm")[12:] *= 1.001


# rule id -> (a healthy input the rule judges, the smallest change that breaks it, the check the
# broken input is reported as)
PAIRS: dict[str, tuple[Callable[[], Run], Callable[[], Run], str]] = {
    "agent": (healthy_run, _with(healthy_run, _agent_finding), "nonfinite-gradient"),
    "nonfinite": (
        healthy_run,
        _with(healthy_run, _set("grad_norm/head.weight", slice(120, None), math.nan)),
        "nonfinite-gradient",
    ),
    "exploding-gradient": (
        healthy_run,
        _with(healthy_run, _set("grad_norm/conv.weight", 200, 1e3)),
        "exploding-gradient",
    ),
    "vanishing-gradient": (healthy_run, _with(healthy_run, _vanished), "vanishing-gradient"),
    "no-gradient": (healthy_run, _with(healthy_run, _no_gradient), "no-gradient"),
    "dead-layer": (
        healthy_run,
        _with(healthy_run, _set("grad_zero_frac/head.weight", slice(300, None), 1.0)),
        "dead-layer",
    ),
    "dead-units-rising": (
        healthy_run,
        _with(
            healthy_run,
            _set("grad_dead_units/head.weight", slice(None), np.linspace(0.05, 0.9, STEPS)),
        ),
        "dead-units-rising",
    ),
    "update-ratio": (
        healthy_run,
        _with(healthy_run, _set("update_ratio/head.weight", slice(None), 0.5)),
        "update-ratio-high",
    ),
    "loss": (healthy_run, _with(healthy_run, _set("loss/train", 250, 50.0)), "loss-spike"),
    "clipping-always": (
        healthy_run,
        _with(healthy_run, _set("clip/observed", slice(None), 1.0)),
        "clipping-always",
    ),
    "clipping-never": (
        _clipped_rarely,
        lambda: _clipped_rarely(threshold=1e4),
        "clipping-never",
    ),
    "clip-before-unscale": (
        _clipped_under_scaler,
        lambda: _clipped_under_scaler(before_unscale=1.0),
        "clip-before-unscale",
    ),
    "warmup": (
        healthy_run,
        _with(healthy_run, _set("lr/group0", slice(None), 1e-2)),
        "no-warmup",
    ),
    "lr-jumps": (healthy_run, _with(healthy_run, _stepped_warmup), "lr-jumps"),
    "lr-zero": (
        healthy_run,
        _with(healthy_run, _set("lr/group0", slice(200, None), 0.0)),
        "lr-zero-early",
    ),
    "decay-on-norm-bias": (
        _decay_split,
        _with(_decay_split, _norm_decayed),
        "decay-on-norm-bias",
    ),
    "adam-coupled-l2": (_decay_split, _with(_decay_split, _coupled), "adam-coupled-l2"),
    "weight-decay-strength": (
        _decay_split,
        _with(_decay_split, _strong_decay),
        "weight-decay-too-strong",
    ),
    "ema": (healthy_run, _with(healthy_run, _set("eval/acc_ema", -1, 0.8)), "ema-worse"),
    "eps-dominates": (
        healthy_run,
        _with(healthy_run, _set("opt/eps_dominance/head.weight", slice(None), 0.9)),
        "eps-dominates",
    ),
    "gradients-not-zeroed": (
        _cleared,
        _with(_cleared, _set("grad/carried_over", slice(1, None), 1.0)),
        "gradients-not-zeroed",
    ),
    "train-mode": (
        _in_training_mode,
        _with(_in_training_mode, _left_in_eval),
        "training-in-eval-mode",
    ),
    "eval-mode": (
        _evaluated_in_eval_mode,
        _with(_evaluated_in_eval_mode, _set("mode/nograd_training_forwards", 10, 8.0)),
        "evaluation-in-train-mode",
    ),
    "softmax-twice": (
        _logits_into_cross_entropy,
        _with(_logits_into_cross_entropy, _set("loss/softmax_inputs", slice(None), 1.0)),
        "cross-entropy-on-probabilities",
    ),
    "init-scale": (
        _initialised,
        _with(_initialised, _set("weight_std/head.weight", slice(None), 1.0)),
        "init-too-large",
    ),
    "accumulation": (
        _accumulating,
        _with(_accumulating, _set("accum/loss_scale", slice(None), 1.0)),
        "accumulation-loss-not-divided",
    ),
    # Rates that hold between two blocks still rise with depth; a block dropping less than the
    # one before it does not.
    "drop-path": (
        lambda: _drop_path([0.0, 0.05, 0.05, 0.1]),
        lambda: _drop_path([0.0, 0.1, 0.05, 0.2]),
        "drop-path-order",
    ),
    "drop-path-eval": (_evaluated, lambda: _evaluated(0.25), "drop-path-in-eval"),
    "batchnorm": (
        _batchnorm,
        _with(_batchnorm, _set("bn/batch_size/stem.1", slice(None), 4.0)),
        "batchnorm-small-batch",
    ),
    "replicas": (_ranks, _with(_ranks, _rank_differs), "ranks-gradients-differ"),
    "stragglers": (_ranks, _with(_ranks, _slow_rank), "straggler"),
}


def test_every_registered_rule_has_a_healthy_and_a_broken_input() -> None:
    assert sorted(PAIRS) == sorted(r.id for r in RULES)


@pytest.mark.parametrize("rule_id", sorted(PAIRS))
def test_a_healthy_input_is_judged_and_raises_nothing(rule_id: str) -> None:
    (registered,) = [r for r in RULES if r.id == rule_id]
    diagnosis = diagnose(PAIRS[rule_id][0](), rules=[registered])
    (status,) = diagnosis.checks
    assert (status.status, status.reason, diagnosis.findings) == ("ran", None, [])


@pytest.mark.parametrize("rule_id", sorted(PAIRS))
def test_the_broken_input_beside_it_is_reported(rule_id: str) -> None:
    (registered,) = [r for r in RULES if r.id == rule_id]
    _, broken, expected = PAIRS[rule_id]
    diagnosis = diagnose(broken(), rules=[registered])
    assert [c.status for c in diagnosis.checks] == ["ran"]
    assert [f.check for f in diagnosis.findings] == [expected]


def test_a_branch_without_a_residual_is_an_error_and_a_residual_one_is_not() -> None:
    (drop_path,) = [r for r in RULES if r.id == "drop-path"]
    rising = [0.0, 0.05, 0.1, 0.15]
    assert diagnose(_drop_path(rising, unresidual=0.5), rules=[drop_path]).findings == []
    (found,) = diagnose(_drop_path(rising, unresidual=0.9), rules=[drop_path]).findings
    assert (found.check, found.severity, found.layer) == (
        "drop-path-no-residual", "error", "blocks.2.drop_path"
    )  # fmt: skip


def test_an_infinite_loss_is_a_nonfinite_loss_not_a_spike() -> None:
    run = healthy_run()
    run.values("loss/train")[250] = math.inf
    diagnosis = diagnose(run)
    assert [(f.check, f.severity, f.step) for f in diagnosis.findings] == [
        ("nonfinite-loss", "error", 250)
    ]
    loss = {c.id: c for c in diagnosis.checks}["loss"]
    assert (loss.status, loss.findings) == ("ran", 0)
