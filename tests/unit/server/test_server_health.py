"""Health checks on synthetic runs whose problems are known by construction."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from trickscope_server.services import health
from trickscope_server.services.health import Finding, Summary
from trickscope_wire import LayersDeclare, dumps


@dataclass
class Run:
    """A RunView over in-memory columns, summarised exactly as the server does at ingest."""

    layers: list[str] = field(default_factory=list)
    columns: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    status: str = "finished"
    ranks: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, name: str, values: Any, steps: Any = None) -> Run:
        values = np.asarray(values, dtype=np.float64)
        steps = np.arange(values.size) if steps is None else np.asarray(steps)
        self.columns[name] = (steps.astype(np.int64), values)
        return self

    @property
    def summaries(self) -> dict[str, Summary]:
        out = {}
        for name, (steps, values) in self.columns.items():
            bad = steps[~np.isfinite(values)]
            out[name] = Summary(
                count=int(steps.size),
                last_step=int(steps[-1]),
                last_value=float(values[-1]),
                first_nonfinite_step=int(bad.min()) if bad.size else None,
            )
        return out

    def series(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        return self.columns[name]


def checks(run: Run, check: health.Check) -> list[Finding]:
    return list(check(run))


def healthy_run(steps: int = 400) -> Run:
    rng = np.random.default_rng(0)
    run = Run(layers=["conv.weight", "conv.bias", "head.weight"])
    for layer in run.layers:
        run.add(f"grad_norm/{layer}", 0.1 + 0.01 * rng.random(steps))
        run.add(f"update_ratio/{layer}", 1e-3 * (1 + 0.1 * rng.random(steps)))
    run.add("loss/train", 2.0 * np.exp(-np.arange(steps) / 200) + 0.01 * rng.random(steps))
    warm = np.minimum(1.0, (np.arange(steps) + 1) / 100) * 1e-3
    run.add("lr/group0", warm).add("opt/beta2/group0", [0.99] * steps)
    run.add("clip/clipped", (rng.random(steps) < 0.1).astype(float))
    run.add("eval/acc_raw", [0.9, 0.95]).add("eval/acc_ema", [0.91, 0.96])
    return run


def test_a_healthy_run_has_no_findings() -> None:
    assert health.diagnose(healthy_run()) == []


def test_the_first_layer_to_go_nan_is_named_with_its_step() -> None:
    run = healthy_run()
    head = run.columns["grad_norm/head.weight"][1]
    conv = run.columns["grad_norm/conv.weight"][1]
    head[120:] = math.nan
    conv[150:] = math.inf
    (finding,) = checks(run, health.nonfinite)
    assert (finding.check, finding.layer, finding.step) == (
        "nonfinite-gradient",
        "head.weight",
        120,
    )
    assert finding.severity == "error"


def test_a_gradient_jump_is_reported_at_its_step_and_layer() -> None:
    run = healthy_run()
    run.columns["grad_norm/conv.bias"][1][300] = 1e3
    (finding,) = checks(run, health.exploding)
    assert (finding.layer, finding.step) == ("conv.bias", 300)


def test_vanishing_and_spread_gradients_are_reported() -> None:
    run = healthy_run()
    run.columns["grad_norm/conv.weight"][1][:] = 1e-9
    found = {f.check: f for f in checks(run, health.vanishing)}
    assert found["vanishing-gradient"].layer == "conv.weight"
    assert found["gradient-spread"].layer == "conv.weight"


@pytest.mark.parametrize(
    ("ratio", "check"), [(0.5, "update-ratio-high"), (1e-7, "update-ratio-low")]
)
def test_update_ratio_outside_the_band(ratio: float, check: str) -> None:
    run = healthy_run()
    run.columns["update_ratio/head.weight"][1][:] = ratio
    (finding,) = checks(run, health.update_ratio)
    assert (finding.check, finding.layer) == (check, "head.weight")


def test_parameters_without_gradients_are_listed_as_frozen_not_dead() -> None:
    run = healthy_run()
    run.layers.append("frozen.weight")
    (finding,) = checks(run, health.never_gradient)
    assert finding.layer == "frozen.weight" and "frozen" in finding.detail


def test_a_loss_spike_is_found_at_its_step() -> None:
    run = healthy_run()
    run.columns["loss/train"][1][250] = 50.0
    (finding,) = checks(run, health.loss_spikes)
    assert finding.step == 250


def test_clipping_on_every_step_means_the_threshold_is_too_low() -> None:
    run = healthy_run()
    run.columns["clip/clipped"][1][:] = 1.0
    run.add("clip/threshold", [0.01] * 400)
    (finding,) = checks(run, health.clipping)
    assert finding.check == "clipping-always" and "0.01" in finding.detail


def test_adam_without_warmup_and_with_a_short_one() -> None:
    run = healthy_run()
    run.columns["lr/group0"][1][:] = 1e-3
    run.columns["opt/beta2/group0"][1][:] = 0.999
    (finding,) = checks(run, health.warmup)
    assert finding.check == "no-warmup" and "2000" in finding.detail
    run.columns["lr/group0"][1][:] = np.minimum(1.0, (np.arange(400) + 1) / 20) * 1e-3
    (finding,) = checks(run, health.warmup)
    assert finding.check == "short-warmup"


def test_warmup_is_judged_only_for_adam_family_optimizers() -> None:
    run = healthy_run()
    del run.columns["opt/beta2/group0"]
    run.columns["lr/group0"][1][:] = 1e-3
    run.config = {"optimizer": "sgd", "betas": [0.9, 0.999]}
    assert checks(run, health.warmup) == []
    run.config = {"optimizer": "AdamW", "betas": [0.9, 0.999]}
    assert [f.check for f in checks(run, health.warmup)] == ["no-warmup"]


def test_update_ratio_falling_with_a_decayed_lr_at_the_end_is_fine() -> None:
    run = healthy_run()
    run.columns["update_ratio/head.weight"][1][-60:] = 1e-7
    assert checks(run, health.update_ratio) == []


def test_lr_reaching_zero_early_is_reported() -> None:
    run = healthy_run()
    run.columns["lr/group0"][1][200:] = 0.0
    (finding,) = checks(run, health.lr_zero_early)
    assert finding.step == 200


def test_ema_worse_than_raw_and_a_long_horizon() -> None:
    run = healthy_run()
    run.add("eval/acc_ema", [0.5, 0.8]).add("ema/decay", [0.9999] * 400)
    found = {f.check for f in checks(run, health.ema)}
    assert found == {"ema-worse", "ema-horizon"}
    run.status = "running"
    assert {f.check for f in checks(run, health.ema)} == {"ema-horizon"}


def test_eps_dominance_and_drop_path_order() -> None:
    run = healthy_run()
    run.add("opt/eps_dominance/head.weight", [0.9]).add("opt/eps_dominance/conv.weight", [0.1])
    (finding,) = checks(run, health.eps_dominance)
    assert finding.layer == "head.weight"
    for block, rate in (
        ("blocks.0", 0.0),
        ("blocks.1", 0.1),
        ("blocks.2", 0.05),
        ("blocks.10", 0.2),
    ):
        run.add(f"drop_path/rate/{block}", [rate])
    (finding,) = checks(run, health.drop_path)
    assert finding.layer == "blocks.2"


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
    # Equal NaN and equal infinities are agreement too.
    for rank in range(3):
        run.columns[f"rank/{rank}/grad_norm"][1][[7, 8]] = [math.nan, math.inf]
    assert checks(run, health.replicas) == [] and checks(run, health.stragglers) == []


def test_ranks_whose_gradients_differ_are_named_once_with_the_first_step() -> None:
    run = distributed_run()
    run.columns["rank/2/grad_norm"][1][12:] *= 1.001
    run.columns["rank/1/grad_norm"][1][30] = math.nan
    run.columns["rank/1/weight_norm"][1][31:] += 1  # follows from the gradients: not reported
    (finding,) = checks(run, health.replicas)
    assert (finding.check, finding.severity, finding.step) == (
        "ranks-gradients-differ",
        "error",
        12,
    )
    assert finding.title == "Gradients of ranks 1, 2 differ from rank 0's from step 12"


def test_weights_that_drift_with_agreeing_gradients_are_reported() -> None:
    run = distributed_run()
    run.columns["rank/1/weight_norm"][1][20:] *= 1 + 1e-4
    run.columns["rank/2/weight_norm"][1][20:] *= 1 + 1e-7  # within float tolerance
    (finding,) = checks(run, health.replicas)
    assert (finding.check, finding.step) == ("ranks-weights-differ", 20)
    assert "rank 1 " in finding.title and "rank 2" not in finding.title


def test_a_rank_waiting_on_its_input_is_named_as_the_straggler() -> None:
    run = distributed_run(world_size=4)
    run.columns["rank/3/data_time"][1][:] += 0.1  # half of a 200 ms step
    (finding,) = checks(run, health.stragglers)
    assert finding.check == "straggler" and finding.title.startswith("Rank 3 waits 11")
    assert "% of each 20" in finding.detail and finding.detail.endswith("host where it runs.")
    run.ranks = {"3": {"hostname": "node-7", "pid": 4242}}  # as the rank declared itself
    (finding,) = checks(run, health.stragglers)
    assert finding.detail.endswith("a busier host on node-7.")
    # A rank twice as slow to get its input, but by 7% of the step, is left alone.
    quiet = distributed_run(world_size=2)
    quiet.columns["rank/1/data_time"][1][:] += 0.014
    assert checks(quiet, health.stragglers) == []
    # Nor is a 3 ms wait on a 5 ms step: half the step, but scheduling jitter at that scale.
    tiny = distributed_run(world_size=2)
    for rank, wait in ((0, 0.0005), (1, 0.003)):
        tiny.columns[f"rank/{rank}/step_time"][1][:] = 0.005
        tiny.columns[f"rank/{rank}/data_time"][1][:] = wait
    assert checks(tiny, health.stragglers) == []


def test_findings_are_sorted_by_severity_then_step() -> None:
    run = healthy_run()
    run.columns["loss/train"][1][250] = 50.0
    run.columns["grad_norm/head.weight"][1][300:] = math.nan
    run.columns["loss/train"][1][320:] = math.nan
    found = health.diagnose(run)
    assert [f.severity for f in found][:2] == ["error", "error"]
    assert [f.step for f in found][:2] == [300, 320]


def test_the_health_endpoint_reads_stored_series(
    client: Any, make_run: Any, post_batch: Any
) -> None:
    """Through the API and real storage: the first NaN layer and a frozen parameter are found."""
    make_run("sick")
    layers = ["stem.weight", "head.weight", "frozen.weight"]
    response = client.put(
        "/api/v1/runs/sick/layers",
        content=dumps(LayersDeclare(layers=layers)),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    steps = list(range(100))
    stem = [0.1] * 100
    head = [0.2] * 60 + [math.nan] * 40
    post_batch("sick", "b1", {"grad_norm/stem.weight": (steps, stem),
                              "grad_norm/head.weight": (steps, head)})  # fmt: skip
    response = client.get("/api/v1/runs/sick/health")
    assert response.status_code == 200, response.text
    findings = response.json()["findings"]
    first = findings[0]
    assert (first["check"], first["layer"], first["step"]) == (
        "nonfinite-gradient",
        "head.weight",
        60,
    )
    assert any(f["check"] == "no-gradient" and f["layer"] == "frozen.weight" for f in findings)


def test_the_health_of_an_unknown_run_is_a_404_problem(client: Any) -> None:
    response = client.get("/api/v1/runs/nope/health")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
