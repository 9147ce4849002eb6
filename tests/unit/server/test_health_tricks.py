"""Health rules on the tricks: weight decay, EMA, eps, accumulation, DropPath, distributed runs."""

from __future__ import annotations

import math

import numpy as np

from tests.unit.server.health_view import Run, adam_setup, check, healthy_run, skipped


def test_decay_on_norm_weights_warns_naming_them() -> None:
    run = healthy_run()
    run.setup["optimizer"]["groups"][0]["weight_decay"] = 0.05
    (found,) = check(run, "decay-on-norm-bias")
    assert (found.check, found.severity, found.layer) == (
        "decay-on-norm-bias", "warning", "norm.weight"
    )  # fmt: skip
    assert found.evidence["params"] == ["norm.weight", "conv.bias"]
    assert "norm.weight" in found.title


def test_decay_on_biases_only_or_small_sgd_decay_is_info() -> None:
    run = Run(setup=adam_setup([("a.weight", "weight"), ("a.bias", "bias")], weight_decay=0.1))
    (found,) = check(run, "decay-on-norm-bias")
    assert (found.severity, found.layer) == ("info", "a.bias")
    run.setup = adam_setup(
        [("n.weight", "norm")], weight_decay=1e-4, decoupled=False, cls="SGD", family="sgd"
    )
    (found,) = check(run, "decay-on-norm-bias")
    assert found.severity == "info"
    assert check(healthy_run(), "decay-on-norm-bias") == []


def test_adam_with_coupled_l2_warns() -> None:
    run = Run(setup=adam_setup([("a.weight", "weight")], weight_decay=0.01, decoupled=False,
                               cls="Adam"))  # fmt: skip
    (found,) = check(run, "adam-coupled-l2")
    assert (found.check, found.severity, found.evidence["weight_decay"]) == (
        "adam-coupled-l2", "warning", 0.01
    )  # fmt: skip
    assert check(healthy_run(), "adam-coupled-l2") == []


def test_an_ema_horizon_longer_than_the_planned_run_warns() -> None:
    run = healthy_run()
    run.setup["ema"]["decay"] = 0.9999
    (found,) = check(run, "ema")
    assert (found.check, found.severity, found.evidence["length_source"]) == (
        "ema-horizon", "warning", "planned"
    )  # fmt: skip
    run.setup["ema"]["decay"] = 0.996  # a 250-step horizon: over half of 400
    (found,) = check(run, "ema")
    assert (found.check, found.severity) == ("ema-horizon", "info")


def test_the_realised_length_counts_only_once_the_run_is_over() -> None:
    run = healthy_run()
    run.setup["planned_steps"] = None
    run.setup["ema"]["decay"] = 0.9999
    assert check(run, "ema")[0].evidence["length_source"] == "realised"
    run.status = "running"
    assert check(run, "ema") == []


def test_an_ema_never_updated() -> None:
    run = healthy_run()
    run.values("ema/norm")[:] = 3.0
    (found,) = check(run, "ema")
    assert (found.check, found.severity) == ("ema-not-updated", "warning")
    run = healthy_run()
    run.add("ema/updates", [0, 0, 0, 0])
    assert [f.check for f in check(run, "ema")] == ["ema-not-updated"]


def test_an_ema_whose_batchnorm_statistics_never_move() -> None:
    run = healthy_run()
    run.add("bn_stats_norm", [8.0, 9.5, 10.2, 10.4])
    run.add("ema/bn_stats_norm", [8.0, 9.1, 9.9, 10.3])  # averaged (or copied): moving
    assert check(run, "ema") == []
    run.values("ema/bn_stats_norm")[:] = 8.0  # only the parameters are averaged
    (found,) = check(run, "ema")
    assert (found.check, found.severity, found.step) == ("ema-stale-batchnorm", "warning", 3)
    run.values("ema/norm")[:] = 3.0  # not updated at all: that finding says it all
    assert [f.check for f in check(run, "ema")] == ["ema-not-updated"]


def test_an_ema_worse_than_raw_at_the_end_for_any_naming() -> None:
    for ema_name, raw_name, ema, raw in (
        ("eval/acc_ema", "eval/acc_raw", [0.5, 0.8], [0.9, 0.95]),
        ("val/acc_ema", "val/acc", [0.5, 0.8], [0.9, 0.95]),
        ("acc/ema", "acc/raw", [50.0, 80.0], [90.0, 95.0]),
        ("val/ema_loss", "val/loss", [0.5, 0.9], [0.6, 0.4]),
    ):
        run = healthy_run()
        del run.columns["eval/acc_ema"], run.columns["eval/acc_raw"]
        run.add(ema_name, ema, [100, 399]).add(raw_name, raw, [100, 399])
        (found,) = check(run, "ema")
        assert (found.check, found.step, found.evidence["raw_series"]) == (
            "ema-worse", 399, raw_name
        ), ema_name  # fmt: skip
        run.status = "running"
        assert check(run, "ema") == []


def test_eps_dominates_by_the_median_not_the_last_value() -> None:
    run = healthy_run()
    run.values("opt/eps_dominance/head.weight")[:] = 0.9
    run.values("opt/eps_dominance/conv.weight")[-1] = 0.95  # one sample is not most of the run
    (found,) = check(run, "eps-dominates")
    assert (found.check, found.layer, found.step) == ("eps-dominates", "head.weight", 399)


def test_accumulation_with_an_undivided_loss() -> None:
    run = healthy_run()
    run.values("accum/backward_passes")[:] = 4.0
    run.add("accum/loss_scale", [1.02, 0.98, 1.0, 1.01], [0, 100, 200, 300])
    (found,) = check(run, "accumulation")
    assert (found.check, found.step, found.evidence["backward_passes"]) == (
        "accumulation-loss-not-divided", 0, 4.0
    )  # fmt: skip
    run.add("accum/loss_scale", [0.26, 0.25, 0.24, 0.25], [0, 100, 200, 300])
    assert check(run, "accumulation") == []
    del run.columns["accum/loss_scale"]
    assert "loss scale" in (skipped(run, "accumulation") or "")


def test_accumulation_inferred_from_norms_growing_with_the_pass_count() -> None:
    run = healthy_run()
    passes = np.tile([1.0, 2.0, 4.0, 8.0], 100)
    run.values("accum/backward_passes")[:] = passes
    run.values("grad_norm/total")[:] *= passes
    (found,) = check(run, "accumulation")
    assert found.check == "accumulation-loss-not-divided" and 0.7 < found.evidence["slope"] < 1.3


def test_drop_path_without_a_residual_is_an_error_naming_the_block() -> None:
    run = healthy_run()
    for block, share in (("blocks.0", 0.0), ("blocks.1", 1.0)):
        run.add(f"drop_path/realised/{block}", [0.0, 0.1, 0.2, 0.1], [0, 10, 20, 30])
        run.add(f"drop_path/unresidual/{block}", [0.0, share, share, share], [0, 10, 20, 30])
    (found,) = check(run, "drop-path")
    assert (found.check, found.severity, found.layer, found.step) == (
        "drop-path-no-residual", "error", "blocks.1", 10
    )  # fmt: skip


def test_drop_path_rates_falling_with_depth_from_the_setup_or_series() -> None:
    run = healthy_run()
    run.setup["drop_path"] = [
        {"module": f"blocks.{i}.drop_path", "class": "DropPath", "rate": rate,
         "parent": f"blocks.{i}"}
        for i, rate in enumerate([0.0, 0.1, 0.05, 0.2])
    ]  # fmt: skip
    (found,) = check(run, "drop-path")
    assert (found.check, found.severity, found.layer) == ("drop-path-order", "info", "blocks.2")
    run.setup["drop_path"] = []
    for block, rate in (
        ("blocks.0", 0.0),
        ("blocks.1", 0.1),
        ("blocks.2", 0.05),
        ("blocks.10", 0.2),
    ):
        run.add(f"drop_path/rate/{block}", [rate])
    (found,) = check(run, "drop-path")
    assert found.layer == "blocks.2"
    run.setup["drop_path"] = [{"module": "b.dp", "class": "DropPath", "rate": r, "parent": f"b{i}"}
                              for i, r in enumerate([0.0, 0.1])]  # fmt: skip
    assert check(run, "drop-path") == []


def distributed_run(world_size: int = 3, steps: int = 50) -> Run:
    """Ranks in agreement: the same norms everywhere, similar input waits."""
    rng = np.random.default_rng(1)
    run = healthy_run(steps)
    grads, weights = 1 + rng.random(steps), 10 + rng.random(steps)
    for rank in range(world_size):
        run.add(f"rank/{rank}/grad_norm", grads.copy()).add(
            f"rank/{rank}/weight_norm", weights.copy()
        )
        run.add(f"rank/{rank}/step_time", 0.2 + 0.01 * rng.random(steps))
        run.add(f"rank/{rank}/data_time", 0.01 + 0.002 * rng.random(steps))
    return run


def test_ranks_in_agreement_have_no_findings() -> None:
    run = distributed_run()
    for rank in range(3):  # equal NaN and equal infinities are agreement too
        run.values(f"rank/{rank}/grad_norm")[[7, 8]] = [math.nan, math.inf]
    assert check(run, "replicas") == [] and check(run, "stragglers") == []


def test_ranks_whose_gradients_differ_are_named_once_with_the_first_step() -> None:
    run = distributed_run()
    run.values("rank/2/grad_norm")[12:] *= 1.001
    run.values("rank/1/grad_norm")[30] = math.nan
    run.values("rank/1/weight_norm")[31:] += 1  # follows from the gradients: not reported
    (found,) = check(run, "replicas")
    assert (found.check, found.severity, found.step) == ("ranks-gradients-differ", "error", 12)
    assert found.title == "Gradients of ranks 1, 2 differ from rank 0's from step 12"


def test_weights_that_drift_with_agreeing_gradients_are_reported() -> None:
    run = distributed_run()
    run.values("rank/1/weight_norm")[20:] *= 1 + 1e-4
    run.values("rank/2/weight_norm")[20:] *= 1 + 1e-7  # within float tolerance
    (found,) = check(run, "replicas")
    assert (found.check, found.step) == ("ranks-weights-differ", 20)
    assert "rank 1 " in found.title and "rank 2" not in found.title


def test_a_rank_waiting_on_its_input_is_named_as_the_straggler() -> None:
    run = distributed_run(world_size=4)
    run.values("rank/3/data_time")[:] += 0.1  # half of a 200 ms step
    (found,) = check(run, "stragglers")
    assert found.check == "straggler" and found.title.startswith("Rank 3 waits 11")
    assert "% of each 20" in found.detail and found.detail.endswith("host where it runs.")
    run.ranks = {"3": {"hostname": "node-7", "pid": 4242}}
    (found,) = check(run, "stragglers")
    assert found.detail.endswith("a busier host on node-7.")
    quiet = distributed_run(world_size=2)  # twice as slow, but 7% of the step
    quiet.values("rank/1/data_time")[:] += 0.014
    assert check(quiet, "stragglers") == []
    tiny = distributed_run(world_size=2)  # 3 ms on a 5 ms step: scheduling jitter
    for rank, wait in ((0, 0.0005), (1, 0.003)):
        tiny.values(f"rank/{rank}/step_time")[:] = 0.005
        tiny.values(f"rank/{rank}/data_time")[:] = wait
    assert check(tiny, "stragglers") == []


def test_drop_path_without_a_residual_names_the_module_the_setup_saw() -> None:
    run = healthy_run()
    run.setup["drop_path"] = [
        {"module": "blocks.1.drop_path", "class": "DropPath", "rate": 0.1, "parent": "blocks.1"}
    ]
    run.add("drop_path/realised/blocks.1", [0.1, 0.2, 0.1], [0, 10, 20])
    run.add("drop_path/unresidual/blocks.1", [1.0, 1.0, 1.0], [0, 10, 20])
    (found,) = [f for f in check(run, "drop-path") if f.check == "drop-path-no-residual"]
    assert (found.layer, found.evidence["block"]) == ("blocks.1.drop_path", "blocks.1")


def test_decayed_embeddings_are_info_and_norm_gains_a_warning() -> None:
    params = [("wte.weight", "embedding"), ("h.weight", "weight")]
    run = Run(setup=adam_setup(params, weight_decay=0.1))
    (found,) = check(run, "decay-on-norm-bias")
    assert (found.severity, found.layer) == ("info", "wte.weight")
    run.setup = adam_setup([("wte.weight", "embedding"), ("ln.weight", "norm")], weight_decay=0.1)
    (found,) = check(run, "decay-on-norm-bias")
    assert found.severity == "warning"


def test_an_ema_is_judged_by_accuracy_where_one_is_compared() -> None:
    run = healthy_run()  # its eval/acc_ema is ahead of eval/acc_raw
    run.add("eval/loss_ema", [1.0, 0.059]).add("eval/loss_raw", [1.0, 0.046])
    assert [f for f in check(run, "ema") if f.check == "ema-worse"] == []
    run.values("eval/acc_ema")[-1] = 0.8
    (found,) = [f for f in check(run, "ema") if f.check == "ema-worse"]
    assert found.evidence["ema_series"] == "eval/acc_ema"
    # Alone, a loss near zero that moves by a few percent is noise, a quarter worse is not.
    loss_only = healthy_run()
    for name in ("eval/acc_ema", "eval/acc_raw"):
        del loss_only.columns[name]
    loss_only.add("eval/loss_ema", [1.0, 0.00474]).add("eval/loss_raw", [1.0, 0.00459])
    assert [f for f in check(loss_only, "ema") if f.check == "ema-worse"] == []
    loss_only.values("eval/loss_ema")[-1] = 0.006
    assert [f.check for f in check(loss_only, "ema")] == ["ema-worse"]
