"""Training steps in eval mode: left there after an evaluation, or dropout off from the start;
frozen BatchNorm from the start is a recipe, and an evaluation between due steps is fine."""

from __future__ import annotations

import numpy as np

from tests.unit.server.health_view import check, healthy_run, skipped

DUE = np.arange(0, 400, 10)


def _run(dropout: list[float] | None, batchnorm: list[float] | None):  # noqa: ANN202
    run = healthy_run()
    for kind, shares in (("dropout", dropout), ("batchnorm", batchnorm)):
        if shares is not None:
            run.add(f"mode/{kind}_training", np.asarray(shares, dtype=float), DUE[: len(shares)])
    return run


def test_left_in_eval_after_an_evaluation_names_the_first_step() -> None:
    (found,) = check(_run([1.0] * 15 + [0.0] * 25, None), "train-mode")
    assert (found.check, found.severity, found.step) == ("training-in-eval-mode", "warning", 150)


def test_an_evaluation_between_due_steps_and_back_to_training_is_fine() -> None:
    shares = [1.0] * 40
    shares[20] = 0.0  # one due step read during an evaluation's eval mode, training resumed
    assert check(_run(shares, shares), "train-mode") == []


def test_frozen_batchnorm_from_the_start_is_a_recipe_but_dropout_off_is_not() -> None:
    assert check(_run(None, [0.0] * 40), "train-mode") == []
    assert check(_run([1.0] * 40, [0.0] * 40), "train-mode") == []
    (found,) = check(_run([0.0] * 40, [1.0] * 40), "train-mode")
    assert (found.step, found.title) == (0, "Dropout is switched off for the whole run")


def test_a_model_without_mode_dependent_modules_is_not_judged() -> None:
    assert "no dropout" in (skipped(healthy_run(), "train-mode") or "")
