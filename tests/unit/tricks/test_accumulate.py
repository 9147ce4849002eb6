from __future__ import annotations

import copy
import os
from contextlib import contextmanager

import pytest
import torch
import torch.distributed as dist
from torch import nn

from trickscope.tricks import GradientAccumulator


def test_n_micro_batches_give_the_gradients_of_one_large_batch(sink) -> None:
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 2))
    big = copy.deepcopy(model)
    x, y = torch.randn(24, 6), torch.randn(24, 2)
    loss_fn = nn.MSELoss()
    loss_fn(big(x), y).backward()
    big_grads = [p.grad.clone() for p in big.parameters()]

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    acc = GradientAccumulator(model, optimizer, steps=4, micro_batch_size=6, world_size=2, run=sink)
    assert acc.effective_batch_size == 48
    for i, (xb, yb) in enumerate(zip(x.split(6), y.split(6), strict=True)):
        assert acc.should_step is False
        with acc.micro_step():
            acc.backward(loss_fn(model(xb), yb))
        if i == 3:
            assert acc.should_step is True
            for p, g in zip(model.parameters(), big_grads, strict=True):
                torch.testing.assert_close(p.grad, g)
    before = [p.detach().clone() for p in model.parameters()]
    assert acc.step(step=0) is True
    for p, b, g in zip(model.parameters(), before, big_grads, strict=True):
        torch.testing.assert_close(p.detach(), b - 0.1 * g)
        assert p.grad is None
    metrics, step = sink.calls[-1]
    assert step == 0
    assert metrics == {"accum/micro_steps": 4.0, "accum/effective_batch": 48.0}


def test_step_waits_for_n_micro_steps_unless_forced() -> None:
    model = nn.Linear(3, 1)
    acc = GradientAccumulator(model, torch.optim.SGD(model.parameters(), lr=0.1), steps=3)
    acc.backward(model(torch.randn(2, 3)).sum())
    assert acc.step() is False
    assert acc.step(force=True) is True
    assert acc.micro == 0 and acc.step(force=True) is False
    with pytest.raises(ValueError, match="steps"):
        GradientAccumulator(model, torch.optim.SGD(model.parameters(), lr=0.1), steps=0)
    with pytest.raises(ValueError, match="world_size"):
        GradientAccumulator(model, torch.optim.SGD(model.parameters(), lr=0.1), 2, world_size=0)


@pytest.fixture
def process_group(tmp_path):
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not built")
def test_ddp_syncs_only_on_the_last_micro_step(process_group) -> None:
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    ddp = nn.parallel.DistributedDataParallel(nn.Linear(4, 2))
    original = ddp.no_sync
    entered: list[int] = []

    @contextmanager
    def spy():
        entered.append(1)
        with original():
            yield

    ddp.no_sync = spy  # type: ignore[method-assign]
    acc = GradientAccumulator(ddp, torch.optim.SGD(ddp.parameters(), lr=0.1), steps=3)
    for _ in range(3):
        with acc.micro_step():
            acc.backward(ddp(torch.randn(5, 4)).sum())
    assert len(entered) == 2
    assert acc.step() is True
    # An epoch ending mid-accumulation: the micro-step before a forced step syncs.
    for final in (False, True):
        with acc.micro_step(final=final):
            acc.backward(ddp(torch.randn(5, 4)).sum())
    assert len(entered) == 3
    assert acc.step(force=True) is True


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not built")
def test_world_size_defaults_to_the_process_group(process_group, monkeypatch) -> None:
    model = nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    assert GradientAccumulator(model, optimizer, 2).world_size == 1
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 8)
    acc = GradientAccumulator(model, optimizer, 2, micro_batch_size=16)
    assert acc.effective_batch_size == 16 * 2 * 8
    assert GradientAccumulator(model, optimizer, 2, world_size=3).world_size == 3
