"""The check ring hands a vector over only once its copy is complete, oldest first."""

from __future__ import annotations

import pytest
import torch

from trickscope.probes.ring import Ring
from trickscope.probes.sentinel import coefficient, pick


class FakeEvent:
    def __init__(self) -> None:
        self.done = False

    def query(self) -> bool:
        return self.done


def test_poll_reads_completed_copies_in_order_and_frees_their_slots() -> None:
    ring = Ring(slots=2)
    first, second = FakeEvent(), FakeEvent()
    # As ``ship`` leaves a CUDA copy in flight: event, host buffer, slot, meta.
    ring._free.clear()
    ring._flight.append((first, torch.tensor([1.0, 2.0]), 0, "a"))
    ring._flight.append((second, torch.tensor([3.0]), 1, "b"))
    assert ring.poll() == []
    second.done = True
    assert ring.poll() == []  # the older copy still runs: order is kept
    first.done = True
    assert ring.poll() == [("a", [1.0, 2.0]), ("b", [3.0])]
    assert sorted(ring._free) == [0, 1]


def test_cpu_vectors_are_read_at_once() -> None:
    ring = Ring()
    assert ring.ship(torch.tensor([0.5]), 7)
    assert ring.poll() == [(7, [0.5])]


def test_coefficient_takes_the_largest_sentinel_and_ignores_unscaling() -> None:
    assert coefficient([1.0, 4.0], [0.5, 1.2], None) == pytest.approx(0.3)
    assert coefficient([4.0], [1.0 / 1024], None) == 1.0  # an unscale by 2**12
    assert coefficient([4.0], [0.1 / 1024], 1024.0) == 0.1 / 4.0
    assert coefficient([0.0], [0.0], None) is None


def test_sentinels_are_small_trainable_parameters_of_distinct_modules() -> None:
    params = [torch.zeros(9), torch.zeros(2), torch.zeros(3), torch.zeros(1), torch.zeros(4)]
    params[3].requires_grad_(False)
    for p in params:
        if p is not params[3]:
            p.requires_grad_(True)
    names = ["a.weight", "b.weight", "b.bias", "c.weight", "d.bias"]
    assert pick(names, params) == [1, 4, 0]
