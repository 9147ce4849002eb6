"""The BatchNorm batch-size probe and the eval-mode DropPath probe behind ``watch``."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

import trickscope
from tests.unit.agent.test_tripwire import Tripwire, tripwire  # noqa: F401 - the fixture
from trickscope._incidents import Incidents
from trickscope.probes import batchnorm, drop_path, eval_mode
from trickscope.tricks import DropPath


class ConvNet(nn.Module):
    def __init__(self, norm: str = "batch") -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        norms = {"batch": nn.BatchNorm2d(4), "group": nn.GroupNorm(2, 4),
                 "layer": nn.LayerNorm([4, 6, 6])}  # fmt: skip
        self.norm = norms[norm]
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 6 * 6, 8), nn.BatchNorm1d(8),
                                  nn.ReLU(), nn.Linear(8, 3))  # fmt: skip
        if norm != "batch":
            self.head[2] = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.norm(self.conv(x))))


def _accumulate(
    model: nn.Module, optimizer: torch.optim.Optimizer, steps: int, micro: int, passes: int
) -> None:
    for _ in range(steps):
        optimizer.zero_grad()
        for _ in range(passes):
            x, y = torch.randn(micro, 1, 6, 6), torch.randint(0, 3, (micro,))
            (nn.functional.cross_entropy(model(x), y) / passes).backward()
        optimizer.step()


def test_micro_batches_of_two_are_what_batchnorm_normalises_over(
    capture: Any, settings: dict[str, Any]
) -> None:
    model = ConvNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with trickscope.init(project="p", url=capture.url, **settings) as run:
        run.watch(model, optimizer, every=2)
        _accumulate(model, optimizer, steps=5, micro=2, passes=16)
    assert run.incidents.errors == 0, run.incidents.by_kind
    points = capture.captured.points()
    # The first BatchNorm in model order among equals, on due steps only.
    assert points["bn/batch_size/norm"] == {0: 2.0, 2: 2.0, 4: 2.0}
    assert not [k for k in points if k.startswith("bn/") and k != "bn/batch_size/norm"]
    assert points["accum/backward_passes"][4] == 16.0


def test_the_smallest_batch_of_any_batchnorm_layer_is_reported() -> None:
    model = ConvNet()
    probe = batchnorm.BatchNormProbe(batchnorm.find(model), Incidents())
    assert [s.name for s in probe.sites] == ["norm", "head.2"]
    probe.armed = True
    model.norm(torch.randn(8, 4, 6, 6))
    model.head(torch.randn(3, 4, 6, 6))
    model.head(torch.randn(5, 4, 6, 6))
    assert probe.take() == ("head.2", 3)
    assert probe.take() is None  # reset
    probe.armed = False
    model(torch.randn(2, 1, 6, 6))
    assert probe.take() is None  # unarmed forwards cost an attribute test and record nothing
    probe.close()


@pytest.mark.parametrize("norm", ["group", "layer"])
def test_per_sample_norms_are_not_batchnorm(
    capture: Any, settings: dict[str, Any], norm: str
) -> None:
    model = ConvNet(norm)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with trickscope.init(project="p", url=capture.url, **settings) as run:
        run.watch(model, optimizer, every=1)
        _accumulate(model, optimizer, steps=3, micro=2, passes=4)
    assert not [k for k in capture.captured.points() if k.startswith("bn/")]


def test_frozen_batchnorm_in_eval_mode_is_not_counted(
    capture: Any, settings: dict[str, Any]
) -> None:
    model = ConvNet()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eval()  # fine-tuning with frozen statistics; BatchNorm1d still trains
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with trickscope.init(project="p", url=capture.url, **settings) as run:
        run.watch(model, optimizer, every=1)
        _accumulate(model, optimizer, steps=3, micro=2, passes=2)
    points = capture.captured.points()
    assert "bn/batch_size/norm" not in points
    assert points["bn/batch_size/head.2"] == {0: 2.0, 1: 2.0, 2: 2.0}


def test_sync_batchnorm_without_a_process_group_counts_its_own_samples() -> None:
    model = nn.SyncBatchNorm.convert_sync_batchnorm(ConvNet())
    probe = batchnorm.BatchNormProbe(batchnorm.find(model), Incidents())
    probe.armed = True
    model.norm(torch.randn(6, 4, 6, 6))  # no process group: SyncBatchNorm normalises locally
    assert probe.take() == ("norm", 6)
    probe.close()


class HandWrittenDropPath(nn.Module):
    """The pitfall: drops whatever the mode."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep = (torch.rand(x.shape[0], 1) >= self.p).to(x.dtype)
        return x * keep / (1 - self.p)


class Block(nn.Module):
    def __init__(self, path: nn.Module) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 6)
        self.drop_path = path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.fc(x))


def _train_then_evaluate(
    capture: Any, settings: dict[str, Any], path: nn.Module, evaluate_at: set[int]
) -> dict[str, dict[int, float]]:
    torch.manual_seed(0)
    model = nn.Sequential(Block(path), nn.Linear(6, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with trickscope.init(project="p", url=capture.url, **settings) as run:
        run.watch(model, optimizer, every=100)
        for step in range(4):
            model.train()
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(torch.randn(8, 6)), torch.zeros(8).long()).backward()
            optimizer.step()
            if step in evaluate_at:
                model.eval()
                with torch.inference_mode():
                    for _ in range(10):  # more eval forwards than the probe compares
                        model(torch.randn(8, 6))
    assert run.incidents.errors == 0, run.incidents.by_kind
    return capture.captured.points()


def test_a_drop_path_that_drops_in_eval_is_reported_at_the_next_step_and_at_close(
    capture: Any, settings: dict[str, Any]
) -> None:
    points = _train_then_evaluate(capture, settings, HandWrittenDropPath(0.5), {1, 3})
    # Evaluated after step 1: read at step 2's check. After the last step: read at close.
    assert points["drop_path/eval_changed/0.drop_path"] == {2: 1.0, 3: 1.0}


def _library_drop_path(library: str) -> nn.Module:
    if library == "timm":
        from timm.layers import DropPath as TimmDropPath  # imported here: slow to import

        return TimmDropPath(0.5)
    if library == "torchvision":
        from torchvision.ops import StochasticDepth

        return StochasticDepth(0.5, "row")
    return DropPath(0.5)


@pytest.mark.parametrize("library", ["trickscope", "timm", "torchvision"])
def test_library_drop_paths_are_the_identity_in_eval(
    capture: Any, settings: dict[str, Any], library: str
) -> None:
    points = _train_then_evaluate(capture, settings, _library_drop_path(library), {1, 3})
    assert points["drop_path/eval_changed/0.drop_path"] == {2: 0.0, 3: 0.0}


def test_without_an_evaluation_there_is_nothing_to_report(
    capture: Any, settings: dict[str, Any]
) -> None:
    points = _train_then_evaluate(capture, settings, HandWrittenDropPath(0.5), set())
    assert not [k for k in points if k.startswith("drop_path/eval_changed/")]


def test_eval_comparisons_are_bounded_and_ignore_nan_inputs() -> None:
    block = Block(HandWrittenDropPath(0.5))
    probe = eval_mode.EvalDropPathProbe(drop_path.find(block), Incidents())
    block.eval()
    for _ in range(2 * eval_mode.CHECKS):
        block(torch.randn(4, 6))
    ((name, checked, changed),) = probe.take()
    assert (name, checked) == ("drop_path", eval_mode.CHECKS)
    assert changed is not None and changed.item() == eval_mode.CHECKS
    nan = torch.full((3, 2), float("nan"))
    assert eval_mode.differs(nan, nan * 2).item() == 0.0
    assert eval_mode.differs(torch.ones(3), torch.tensor([1.0, 0.0, 1.0])).item() == 1.0
    probe.close()


def test_the_probes_never_sync_the_training_thread(
    tripwire: Tripwire,  # noqa: F811 - the imported fixture
    capture: Any,
    settings: dict[str, Any],
) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(ConvNet(), nn.Linear(3, 6), Block(HandWrittenDropPath(0.5)))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    run = trickscope.init(project="p", url=capture.url, **settings)
    run.watch(model, optimizer, every=1)
    tripwire.armed = True
    for _ in range(4):
        model.train()
        _accumulate(model, optimizer, steps=1, micro=2, passes=2)
        model.eval()
        with torch.no_grad():
            model(torch.randn(4, 1, 6, 6))
    tripwire.armed = False
    run.finish()
    assert tripwire.trips == []
    assert run.incidents.errors == 0, run.incidents.by_kind
    points = capture.captured.points()
    assert points["bn/batch_size/0.norm"] == {s: 2.0 for s in range(4)}
    assert set(points["drop_path/eval_changed/2.drop_path"]) == {1, 2, 3}
