"""Initial weight scales against each layer's fan-in, from the declared shapes."""

from __future__ import annotations

import numpy as np

from tests.unit.server.health_view import adam_setup, check, healthy_run, skipped

LAYERS = [f"fc{i}.weight" for i in range(4)]


def _run(std: float, shape: list[int], module: str = "Linear"):  # noqa: ANN202
    run = healthy_run()
    run.setup = adam_setup([(name, "weight") for name in LAYERS])
    for param in run.setup["params"]:
        param["shape"], param["module"] = shape, module
    for name in LAYERS:
        run.add(f"weight_std/{name}", np.full(40, std), np.arange(0, 400, 10))
    return run


def test_std_one_on_a_wide_layer_is_too_large_and_he_is_not() -> None:
    (found,) = check(_run(1.0, [256, 256]), "init-scale")
    assert (found.check, found.step, round(found.evidence["gain"])) == ("init-too-large", 0, 16)
    assert check(_run(2**0.5 / 16, [256, 256]), "init-scale") == []  # He: gain √2


def test_a_conv_kernel_counts_its_channels_and_taps_as_fan_in() -> None:
    assert check(_run(0.05, [64, 32, 3, 3], "Conv2d"), "init-scale") == []  # 0.05 × √288 = 0.85
    assert check(_run(0.5, [64, 32, 3, 3], "Conv2d"), "init-scale")[0].check == "init-too-large"


def test_a_tiny_scale_on_most_layers_fades_but_one_zero_layer_is_a_recipe() -> None:
    (found,) = check(_run(1e-4, [256, 256]), "init-scale")  # gain 0.0016
    assert found.check == "init-too-small"
    run = _run(2**0.5 / 16, [256, 256])
    run.values("weight_std/fc3.weight")[:] = 0.0  # a zero-initialised last layer
    assert check(run, "init-scale") == []


def test_layers_without_a_declared_shape_are_not_judged() -> None:
    assert "no weight std" in (skipped(healthy_run(), "init-scale") or "")
