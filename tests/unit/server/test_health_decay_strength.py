"""How strong weight decay is: the shrink per step each optimizer's form implies."""

from __future__ import annotations

import numpy as np

from tests.unit.server.health_view import Run, adam_setup, check, healthy_run, skipped

PARAMS = [("conv.weight", "weight"), ("head.weight", "weight")]


def _sgd(lr: float, decay: float, momentum: float) -> dict:
    setup = adam_setup(PARAMS, lr=lr, weight_decay=decay, decoupled=False, cls="SGD", family="sgd")
    setup["optimizer"]["groups"][0]["momentum"] = momentum
    return setup


def _collapsing() -> Run:
    run = healthy_run()
    for layer in ("conv.weight", "head.weight"):
        run.values(f"weight_norm/{layer}")[:] = np.geomspace(
            1.0, 0.1, run.values("loss/train").size
        )
    return run


def test_sgd_l2_carried_by_momentum_is_ten_times_stronger() -> None:
    run = _collapsing()
    run.setup = _sgd(lr=0.1, decay=5e-4, momentum=0.9)  # the ResNet recipe: 5e-4 a step
    run.values("lr/group0")[:] = 0.1
    assert check(run, "weight-decay-strength") == []
    run.setup = _sgd(lr=0.1, decay=4e-3, momentum=0.9)  # 4e-3 a step: just below the bound
    assert check(run, "weight-decay-strength") == []
    run.setup = _sgd(lr=0.1, decay=1e-2, momentum=0.9)
    (found,) = check(run, "weight-decay-strength")
    assert found.check == "weight-decay-too-strong"
    assert np.isclose(found.evidence["shrink_per_step"], 1e-2)
    assert np.isclose(found.evidence["horizon_steps"], 100)


def test_the_realised_peak_lr_sets_the_shrink_not_the_declared_one() -> None:
    run = _collapsing()
    run.setup = adam_setup(PARAMS, lr=1e-5, weight_decay=10.0)  # declared: 1e-4 a step
    assert check(run, "weight-decay-strength")[0].evidence["lr"] == 1e-3  # the LR series' peak
    run.columns.pop("lr/group0")
    assert check(run, "weight-decay-strength") == []


def test_adam_with_only_an_l2_term_is_left_to_its_own_rule() -> None:
    run = healthy_run()
    run.setup = adam_setup(PARAMS, weight_decay=50.0, decoupled=False, cls="Adam")
    assert "adam-coupled-l2" in (skipped(run, "weight-decay-strength") or "")


def test_strong_decay_on_weights_a_normalisation_follows_is_no_harm() -> None:
    """Conv → BatchNorm: the kernel is scale-invariant, its shrinking raises its effective LR;
    free weights that hold their size do not count either."""
    run = _collapsing()
    run.setup = adam_setup(
        [("conv.weight", "weight"), ("bn.weight", "norm"), ("head.weight", "weight")],
        weight_decay=20.0,
    )
    run.values("weight_norm/head.weight")[:] = 1.0  # the free one held
    assert check(run, "weight-decay-strength") == []
    run.values("weight_norm/head.weight")[:] = np.linspace(1.0, 0.3, 400)
    (found,) = check(run, "weight-decay-strength")
    assert found.evidence["free_weights"] == ["head.weight"]
    assert found.evidence["free_weight_norm_ratio"] == 0.3
