"""The training thread never reads a tensor back to the host while the agent works."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import nn

import trickscope
from trickscope import _foreach
from trickscope.config import AgentConfig
from trickscope.distributed import Rank
from trickscope.run import Run

_SYNCING = ("item", "cpu", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__")
_AGENT_DIR = os.path.dirname(trickscope.__file__) + os.sep


# The one host read the agent makes on purpose: of CPU tensors only, which live in host memory
# (it says False, unread, for any other device). Every other read by agent code trips.
_HOST_READS = {("_host.py", "read")}


def _called_from_agent(tensor: torch.Tensor) -> bool:
    # The optimizer itself may sync (e.g. Adam's single-tensor path reads its step count); only
    # calls made from inside the agent's code count.
    frame = sys._getframe(2)
    while frame is not None:
        code = frame.f_code
        if code.co_filename.startswith(_AGENT_DIR):
            place = (os.path.basename(code.co_filename), code.co_name)
            return not (place in _HOST_READS and tensor.device.type == "cpu")
        frame = frame.f_back  # type: ignore[assignment]
    return False


class Tripwire:
    """Armed: host syncs made by agent code on the main thread raise and are recorded."""

    def __init__(self) -> None:
        self.armed = False
        self.trips: list[str] = []


@pytest.fixture
def tripwire(monkeypatch: pytest.MonkeyPatch) -> Iterator[Tripwire]:
    wire = Tripwire()
    main = threading.main_thread()
    for name in _SYNCING:
        original = getattr(torch.Tensor, name)

        def guard(self: torch.Tensor, *args: Any, _name: str = name, _orig: Any = original) -> Any:
            # The sender thread legitimately converts; only the training thread is guarded.
            if wire.armed and threading.current_thread() is main and _called_from_agent(self):
                wire.trips.append(_name)
                raise RuntimeError(f"host sync: Tensor.{_name} on the training thread")
            return _orig(self, *args)

        monkeypatch.setattr(torch.Tensor, name, guard)
    yield wire


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4 * 6 * 6, 3)
        self.frozen = nn.Parameter(torch.ones(3), requires_grad=False)
        self.unused = nn.Parameter(torch.zeros(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.bn(self.conv(x))).flatten(1)) * self.frozen


@pytest.mark.parametrize("segmented", [False, True])
@pytest.mark.parametrize("optimizer_kind", ["sgd", "adamw"])
def test_training_loop_with_agent_never_syncs(
    tripwire: Tripwire,
    capture: Any,
    settings: dict[str, Any],
    optimizer_kind: str,
    segmented: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # segmented=True runs the CUDA (row) formulation on CPU, under the same tripwire.
    monkeypatch.setattr(_foreach, "_segmented", lambda device: segmented)
    torch.manual_seed(0)
    model = Net()
    groups = [
        {"params": [*model.conv.parameters(), *model.bn.parameters()]},
        {"params": [*model.head.parameters(), model.unused], "lr": 0.01},
    ]
    optimizer: torch.optim.Optimizer = (
        torch.optim.SGD(groups, lr=0.1, momentum=0.9)
        if optimizer_kind == "sgd"
        else torch.optim.AdamW(groups, lr=torch.tensor(1e-3))
    )
    loss_fn = nn.CrossEntropyLoss()
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,))
    run = trickscope.init(project="p", url=capture.url, queue_size=4096, **settings)
    run.watch(model, optimizer, every=1, hist_every=1)  # every statistic and histogram due
    tripwire.armed = True
    for _ in range(30):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        run.log({"loss/train": loss, "acc": (model(x).argmax(1) == y).float().mean(), "n": 1})
    tripwire.armed = False
    run.finish()
    assert tripwire.trips == []
    assert run.incidents.errors == 0, run.incidents.by_kind
    points = capture.captured.points()
    assert len(points["grad_norm/conv.weight"]) == 30
    assert len(points["loss/train"]) == 30
    assert "grad_norm/unused" not in points and "weight_norm/unused" in points
    histograms = capture.captured.histograms()
    assert len(histograms["grad_hist/conv.weight"]) == 30
    assert "grad_hist/unused" not in histograms and "weight_hist/unused" in histograms


def test_amp_training_with_agent_never_syncs(
    tripwire: Tripwire, capture: Any, settings: dict[str, Any]
) -> None:
    torch.manual_seed(0)
    model = Net()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu")
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,))
    run = trickscope.init(project="p", url=capture.url, queue_size=4096, **settings)
    run.watch(model, optimizer, every=1, hist_every=1, scaler=scaler)
    for _ in range(10):
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(nn.functional.cross_entropy(model(x), y)).backward()
        tripwire.armed = True  # the scaler itself reads found_inf back: only the agent is held
        scaler.step(optimizer)
        tripwire.armed = False
        scaler.update()
    run.finish()
    assert tripwire.trips == []
    assert run.incidents.errors == 0, run.incidents.by_kind
    assert len(capture.captured.points()["amp/scale"]) == 10


@pytest.mark.parametrize("rank", [0, 1])
def test_each_rank_of_a_distributed_job_never_syncs(
    tripwire: Tripwire, capture: Any, settings: dict[str, Any], rank: int
) -> None:
    torch.manual_seed(0)
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,))
    agent = AgentConfig.from_env({}, url=capture.url, queue_size=4096, **settings)
    run = Run(project="p", name=None, config=None, tags=None, agent=agent,
              rank=Rank(rank, 2, "gloo"), run_id="e" * 32)  # fmt: skip
    run.watch(model, optimizer, every=1, hist_every=1)
    tripwire.armed = True
    for _ in range(12):
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        run.log({"loss/train": loss})
    tripwire.armed = False
    run.finish()
    assert tripwire.trips == []
    assert run.incidents.errors == 0, run.incidents.by_kind
    points = capture.captured.points()
    prefix = f"rank/{rank}/"
    assert len(points[prefix + "grad_norm"]) == len(points[prefix + "weight_norm"]) == 12
    # The clocks need a step before: from the second step on.
    assert len(points[prefix + "step_time"]) == len(points[prefix + "data_time"]) == 11
    per_layer = [name for name in points if name.startswith(("grad_norm/", "weight_norm/"))]
    if rank == 0:
        assert "grad_norm/conv.weight" in per_layer and len(points["loss/train"]) == 12
        # The summary's total is the watcher's, computed apart.
        assert points[prefix + "grad_norm"] == pytest.approx(points["grad_norm/total"], rel=1e-5)
        assert capture.captured.histograms()
    else:  # the per-layer statistics and histograms come from rank 0 only
        assert per_layer == [] and not capture.captured.histograms()
        assert len(points["rank/1/loss/train"]) == 12 and "loss/train" not in points


def test_tripwire_catches_a_sync_made_by_agent_code(tripwire: Tripwire) -> None:
    from trickscope.transfer import Parcel

    tripwire.armed = True
    with pytest.raises(RuntimeError, match="host sync: Tensor.tolist"):
        Parcel(torch.ones(2)).values()  # the sender's job, done on the wrong thread
    tripwire.armed = False
    assert tripwire.trips == ["tolist"]
