from __future__ import annotations

import torch

from trickscope import _foreach


def test_foreach_and_loop_paths_agree() -> None:
    a = [torch.randn(3, 4), torch.randn(5), torch.randn(2, 2, dtype=torch.float64)]
    b = [torch.randn_like(t) for t in a]
    results = {}
    for enabled in (True, False):
        with _foreach.use_foreach(enabled):
            x = [t.clone() for t in a]
            _foreach.lerp_(x, b, 0.3)
            y = [t.clone() for t in a]
            _foreach.copy_(y, b)
            z = [t.clone() for t in a]
            _foreach.pow_(z, torch.tensor(1.0))
            _foreach.mul_(z[:2], torch.tensor(2.0))
            results[enabled] = (
                x, y, z, _foreach.sub(a, b), _foreach.norm(a), _foreach.norm(a, float("inf")),
                _foreach.mul(a, [torch.tensor(2.0)] * 3),
                _foreach.below_fraction([t.abs() for t in a], [0.5, 0.5, 0.5]),
            )  # fmt: skip
    for got, expect in zip(results[True], results[False], strict=True):
        for g, e in zip(got, expect, strict=True):
            torch.testing.assert_close(g, e)
