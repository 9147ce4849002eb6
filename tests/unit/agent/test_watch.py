"""Cadences, histograms on the wire, and AMP: what the watcher reports and when."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn

import trickscope
from trickscope import stats


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.head = nn.Linear(4 * 6 * 6, 3)
        self.unused = nn.Parameter(torch.zeros(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).flatten(1))


def histc_reference(t: torch.Tensor, bins: int) -> tuple[float, float, float, list[float]]:
    x = t.detach().float().reshape(-1)
    finite = x[x.isfinite()]
    lo, hi = (finite.min().item(), finite.max().item()) if finite.numel() else (0.0, 0.0)
    if lo == hi:
        lo, hi = lo - 1.0, hi + 1.0
    counts = torch.histc(finite, bins, min=lo, max=hi).tolist()
    return lo, hi, float(x.numel() - finite.numel()), counts


def test_histograms_arrive_on_their_own_cadence_and_match_histc(
    capture: Any, settings: dict[str, Any]
) -> None:
    torch.manual_seed(0)
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    expected: dict[str, tuple[float, float, float, list[float]]] = {}
    with trickscope.init(project="p", url=capture.url, **settings) as run:
        run.watch(model, optimizer, every=2, hist_every=3)
        for step in range(7):
            optimizer.zero_grad(set_to_none=True)
            model(torch.randn(4, 1, 8, 8)).pow(2).mean().backward()
            optimizer.step()
            if step == 6:
                for name, p in model.named_parameters():
                    expected[f"weight_hist/{name}"] = histc_reference(p, stats.BINS)
                    if p.grad is not None:
                        expected[f"grad_hist/{name}"] = histc_reference(p.grad, stats.BINS)
    assert run.incidents.errors == 0, run.incidents.by_kind
    histograms = capture.captured.histograms()
    points = capture.captured.points()
    assert set(points["grad_norm/conv.weight"]) == {0, 2, 4, 6}
    assert set(histograms["grad_hist/conv.weight"]) == {0, 3, 6}
    assert set(histograms["weight_hist/unused"]) == {0, 3, 6}
    assert "grad_hist/unused" not in histograms  # no gradient: absent, never zeros
    for name, reference in expected.items():
        lo, hi, nonfinite, counts = histograms[name][6]
        assert (lo, hi, nonfinite) == reference[:3], name
        assert counts == reference[3], name


def test_hist_every_zero_sends_no_histograms(capture: Any, settings: dict[str, Any]) -> None:
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with trickscope.init(project="p", url=capture.url, **settings) as run:
        run.watch(model, optimizer, every=1, hist_every=0)
        for _ in range(3):
            model(torch.randn(2, 1, 8, 8)).sum().backward()
            optimizer.step()
    assert capture.captured.histograms() == {}
    assert len(capture.captured.points()["grad_norm/conv.weight"]) == 3


def test_nan_gradients_are_counted_apart_in_histograms(
    capture: Any, settings: dict[str, Any]
) -> None:
    model = nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    with trickscope.init(project="p", url=capture.url, **settings) as run:
        run.watch(model, optimizer, every=1, hist_every=1)
        model(torch.tensor([[1.0, math.nan, 2.0, math.inf]])).sum().backward()
        optimizer.step()
    lo, hi, nonfinite, counts = capture.captured.histograms()["grad_hist/weight"][0]
    assert nonfinite == 2 and sum(counts) == 2 and (lo, hi) == (1.0, 2.0)
    assert capture.captured.points()["grad_nan/weight"][0] == 1
    assert capture.captured.points()["grad_inf/weight"][0] == 1


def test_watch_checks_cadence_and_scaler_arguments(capture: Any, settings: dict[str, Any]) -> None:
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with trickscope.init(project="p", url=capture.url, **settings) as run:
        with pytest.raises(ValueError, match="hist_every"):
            run.watch(model, optimizer, hist_every=-1)
        with pytest.raises(TypeError, match="scaler"):
            run.watch(model, optimizer, scaler=object())  # type: ignore[arg-type]


def _amp_step(model: nn.Module, optimizer: Any, scaler: Any, x: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(model(x).pow(2).mean()).backward()
    scaler.step(optimizer)
    scaler.update()


def test_amp_statistics_are_of_unscaled_gradients_and_report_the_scale(
    capture: Any, settings: dict[str, Any]
) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    reference = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    reference.load_state_dict(model.state_dict())
    x = torch.randn(5, 8)
    reference(x).pow(2).mean().backward()  # the same loss, never scaled
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    with trickscope.init(project="p", url=capture.url, **settings) as run:
        run.watch(model, optimizer, every=1, hist_every=1, scaler=scaler)
        _amp_step(model, optimizer, scaler, x)
    assert run.incidents.errors == 0, run.incidents.by_kind
    points = capture.captured.points()
    assert points[stats.AMP_SCALE][0] == 2.0**10
    for name, p in reference.named_parameters():
        assert p.grad is not None
        expected = torch.linalg.vector_norm(p.grad).item()
        assert points[f"grad_norm/{name}"][0] == pytest.approx(expected, rel=1e-5), name
        lo, hi, _, _ = capture.captured.histograms()[f"grad_hist/{name}"][0]
        assert (lo, hi) == histc_reference(p.grad, stats.BINS)[:2], name


def test_a_step_the_scaler_skips_is_not_counted(capture: Any, settings: dict[str, Any]) -> None:
    model = nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0)
    with trickscope.init(project="p", url=capture.url, **settings) as run:
        run.watch(model, optimizer, every=1, scaler=scaler)
        _amp_step(model, optimizer, scaler, torch.ones(2, 3))
        assert run._watcher is not None and run._watcher.step == 0
        _amp_step(model, optimizer, scaler, torch.full((2, 3), math.inf))  # skipped: Inf grads
        _amp_step(model, optimizer, scaler, torch.ones(2, 3))
        assert run._watcher.step == 1
        run.log({"loss": 1.0})
    assert run.incidents.errors == 0, run.incidents.by_kind
    points = capture.captured.points()
    assert set(points["grad_norm/weight"]) == {0, 1}  # two optimizer updates happened
    assert points[stats.AMP_SCALE] == {0: 4.0, 1: 2.0}  # the skip halved the scale
    assert points["loss"] == {1: 1.0}


def test_a_fused_amp_optimizer_reports_unscaled_gradients(
    capture: Any, settings: dict[str, Any]
) -> None:
    torch.manual_seed(0)
    model = nn.Linear(6, 3)
    reference = nn.Linear(6, 3)
    reference.load_state_dict(model.state_dict())
    x = torch.randn(4, 6)
    reference(x).pow(2).mean().backward()
    try:
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    except RuntimeError as exc:  # pragma: no cover - depends on the torch build
        pytest.skip(f"no fused Adam on CPU: {exc}")
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    with trickscope.init(project="p", url=capture.url, **settings) as run:
        run.watch(model, optimizer, every=1, scaler=scaler)
        _amp_step(model, optimizer, scaler, x)
    assert run.incidents.errors == 0, run.incidents.by_kind
    points = capture.captured.points()
    for name, p in reference.named_parameters():
        assert p.grad is not None
        expected = torch.linalg.vector_norm(p.grad).item()
        assert points[f"grad_norm/{name}"][0] == pytest.approx(expected, rel=1e-5), name


def test_lr_of_every_group_is_read_each_step_under_any_scheduler(
    capture: Any, settings: dict[str, Any]
) -> None:
    """Statistics every 10 steps, learning rates every step, as torch's scheduler set them."""
    model = Net()
    optimizer = torch.optim.SGD(
        [{"params": model.conv.parameters()}, {"params": model.head.parameters(), "lr": 0.5}],
        lr=0.1,
    )
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5)
    expected: dict[int, list[float]] = {}
    with trickscope.init(project="p", url=capture.url, **settings) as run:
        run.watch(model, optimizer, every=10, hist_every=0)
        for step in range(12):
            optimizer.zero_grad(set_to_none=True)
            model(torch.randn(2, 1, 8, 8)).sum().backward()
            expected[step] = [g["lr"] for g in optimizer.param_groups]
            optimizer.step()
            scheduler.step()
    points = capture.captured.points()
    assert points["lr/group0"] == {s: lrs[0] for s, lrs in expected.items()}
    assert points["lr/group1"] == {s: lrs[1] for s, lrs in expected.items()}
    assert sorted(points["grad_norm/conv.weight"]) == [0, 10]


def test_lr_every_zero_reads_learning_rates_only_with_the_statistics(
    capture: Any, settings: dict[str, Any]
) -> None:
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with trickscope.init(project="p", url=capture.url, **settings) as run:
        run.watch(model, optimizer, every=5, hist_every=0, lr_every=0)
        for _ in range(11):
            model(torch.randn(2, 1, 8, 8)).sum().backward()
            optimizer.step()
    assert sorted(capture.captured.points()["lr/group0"]) == [0, 5, 10]


@pytest.mark.parametrize("frozen", [False, True])
def test_row_formulation_reports_what_the_per_tensor_loop_reports(
    monkeypatch: pytest.MonkeyPatch, frozen: bool
) -> None:
    """The watcher end to end in both formulations (the row one is CUDA's), with every
    parameter holding a gradient (the update ratio reuses the loaded weights) and without."""
    from tests.stats_reference import watched_reports
    from trickscope import _foreach

    reports: dict[bool, list[list[float]]] = {}
    for segmented in (False, True):
        monkeypatch.setattr(_foreach, "_segmented", lambda device, on=segmented: on)
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 1100), nn.ReLU(), nn.Linear(1100, 3))
        if frozen:  # a parameter without a gradient: weights and update take other layouts
            model[0].bias.requires_grad_(False)
        reports[segmented] = watched_reports(model, (4, 8))
    assert len(reports[True]) == 3
    for loop, rows in zip(reports[False], reports[True], strict=True):
        assert rows == pytest.approx(loop, rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("segmented", [False, True])
def test_blocks_of_a_large_model_report_what_one_block_reports(
    monkeypatch: pytest.MonkeyPatch, segmented: bool
) -> None:
    """A model larger than a block is gone through block by block (a bounded scratch buffer):
    every statistic and histogram comes out the same, under the same names."""
    from trickscope import _foreach, watch
    from trickscope._incidents import Incidents

    monkeypatch.setattr(_foreach, "_segmented", lambda device: segmented)
    reports: dict[int, dict[str, float]] = {}
    for block in (1 << 27, 2048):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 300), nn.ReLU(), nn.Linear(300, 3))
        model[0].bias.requires_grad_(False)  # a parameter without a gradient
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
        seen: dict[str, float] = {}

        def stats_out(
            step: int, keys: Any, values: torch.Tensor, host: Any, seen: dict[str, float] = seen
        ) -> None:
            seen.update(zip(keys, values.tolist(), strict=True))

        def hist_out(
            step: int, keys: Any, bins: int, values: torch.Tensor, seen: dict[str, float] = seen
        ) -> None:
            rows = values.reshape(len(keys), -1).tolist()
            for key, row in zip(keys, rows, strict=True):
                seen.update((f"{key}[{i}]", v) for i, v in enumerate(row))

        watcher = watch.Watcher(
            model, optimizer, every=1, start_step=0, emit=stats_out, incidents=Incidents(),
            hist_every=1, emit_hist=hist_out, scratch_bytes=4 * block,
        )  # fmt: skip
        for _ in range(2):
            optimizer.zero_grad()
            model(torch.randn(4, 8)).pow(2).mean().backward()
            optimizer.step()
        watcher.close()
        if block == 2048:  # the model's tensors really were cut into several blocks
            layout = next(iter(watcher._layouts.values()))
            assert len(layout.groups) > 1
        reports[block] = seen
    one, many = reports.values()
    assert one.keys() == many.keys()
    assert [many[key] for key in one] == pytest.approx(list(one.values()), rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("segmented", [False, True])
def test_without_the_update_ratio_there_is_no_snapshot_and_the_rest_is_unchanged(
    monkeypatch: pytest.MonkeyPatch, segmented: bool
) -> None:
    from trickscope import _foreach
    from trickscope._incidents import Incidents
    from trickscope.watch import Watcher

    monkeypatch.setattr(_foreach, "_segmented", lambda device: segmented)
    reports: dict[bool, list[dict[str, float]]] = {}
    for with_ratio in (True, False):
        torch.manual_seed(0)
        model = Net()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        seen: list[dict[str, float]] = []
        watcher = Watcher(
            model,
            optimizer,
            every=2,
            start_step=0,
            emit=lambda step, keys, values, host, seen=seen: seen.append(
                dict(zip(keys, values.tolist(), strict=True))
            ),
            incidents=Incidents(),
            update_ratio=with_ratio,
        )
        for _ in range(5):
            optimizer.zero_grad(set_to_none=True)
            model(torch.randn(4, 1, 8, 8)).pow(2).mean().backward()
            optimizer.step()
        watcher.close()
        snapshots = [g.before for layout in watcher._layouts.values() for g in layout.groups]
        assert all(s is not None for s in snapshots) == with_ratio
        assert all(s is None for s in snapshots) != with_ratio
        reports[with_ratio] = seen
    assert len(reports[False]) == 3
    for full, light in zip(reports[True], reports[False], strict=True):
        assert "update_ratio/conv.weight" in full
        assert not [key for key in light if key.startswith("update_ratio/")]
        assert light == {key: value for key, value in full.items() if key in light}
        assert set(full) - set(light) == {k for k in full if k.startswith("update_ratio/")}


def test_wrapped_models_report_under_the_names_of_the_module_inside(
    capture: Any, settings: dict[str, Any]
) -> None:
    # DataParallel (and DDP) prefix every name with "module.", torch.compile with "_orig_mod.":
    # the series are named after the user's module, so a run reads the same with or without.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 1))
    wrapped = torch.compile(nn.DataParallel(model), backend="eager")
    assert next(iter(dict(wrapped.named_parameters()))) == "_orig_mod.module.0.weight"
    optimizer = torch.optim.SGD(wrapped.parameters(), lr=0.1)
    with trickscope.init(project="p", url=capture.url, **settings) as run:
        run.watch(wrapped, optimizer, every=1, hist_every=1)
        wrapped(torch.randn(5, 4)).pow(2).mean().backward()
        optimizer.step()
    assert run.incidents.errors == 0, run.incidents.by_kind
    layers = ["0.weight", "0.bias", "2.weight", "2.bias"]
    declared = [
        body["layers"] for _, path, body in capture.captured.snapshot() if path.endswith("/layers")
    ]
    assert declared == [layers]
    points = capture.captured.points()
    assert {name for name in points if "/" in name and not name.startswith("lr/")} == {
        f"{stat}/{layer}"
        for stat in stats.GRAD_STATS + stats.WEIGHT_STATS + (stats.UPDATE_STAT,)
        for layer in layers
    } | {stats.TOTAL_GRAD_NORM} | {  # the default diagnosis, named alike
        "accum/backward_passes",
        "grad/carried_over",
        "clip/observed",
        "grad_norm/total_preclip",
        "grad_dead_units/0.weight",
        "grad_dead_units/2.weight",
    }
    assert set(capture.captured.histograms()) == {
        f"{kind}/{layer}" for kind in (stats.GRAD_HIST, stats.WEIGHT_HIST) for layer in layers
    }
