"""The clip call's threshold read from the loop's source, and the clip made before
``GradScaler.unscale_`` told from the one made after it by the measured coefficient."""

from __future__ import annotations

import runpy
import sys
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import trickscope
from tests.unit.agent.test_tripwire import Tripwire, tripwire  # noqa: F401 - the fixture
from trickscope.probes import clip_call

MAX_NORM = 2.5


class _Trips:
    """A property that must never run: reading the threshold runs no user code."""

    @property
    def clip(self) -> float:
        raise AssertionError("a property was run")


def test_the_threshold_is_read_as_a_literal_a_global_a_local_or_an_attribute() -> None:
    local_norm = 0.75
    config = SimpleNamespace(grad_clip=3.0)
    model = nn.Linear(2, 2)
    frame = sys._getframe()

    def first(source_line: Any) -> float | None:
        return clip_call.threshold(frame)

    # Only the first call in the source counts: this function's first call is the literal.
    if False:
        torch.nn.utils.clip_grad_norm_(model.parameters(), 4.0)
        nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)
        nn.utils.clip_grad_norm_(model.parameters(), max_norm=local_norm)
        nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    assert first(None) == 4.0
    for expected, call in [
        (MAX_NORM, "torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)"),
        (0.75, "nn.utils.clip_grad_norm_(model.parameters(), max_norm=local_norm)"),
        (3.0, "torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)"),
    ]:
        assert _threshold_of(call, {"model": model, "local_norm": local_norm,
                                    "config": config}) == expected  # fmt: skip


def _threshold_of(call: str, scope: dict[str, Any]) -> float | None:
    """The threshold found in a function whose source holds ``call``, from inside its frame."""
    import linecache
    import textwrap

    source = textwrap.dedent(f"""
        def loop(probe):
            if probe is None:  # read, never run
                {call}
            return probe()
        """)
    filename = f"<clip-call-test-{abs(hash(call))}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace: dict[str, Any] = {"torch": torch, "nn": nn, "MAX_NORM": MAX_NORM, **scope}
    exec(compile(source, filename, "exec"), namespace)  # noqa: S102 - the test's own source
    return namespace["loop"](lambda: clip_call.threshold(sys._getframe(1)))


def test_a_loop_at_a_scripts_top_level_is_read_whole(tmp_path: Any) -> None:
    script = tmp_path / "train.py"
    script.write_text(
        "import sys\n"
        "import torch\n"
        "from trickscope.probes import clip_call\n"
        "MAX_NORM = 3.5\n"
        "model = torch.nn.Linear(2, 2)\n"
        "for step in range(1):\n"
        "    if step < 0:\n"
        "        torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)\n"
        "    found = clip_call.threshold(sys._getframe())\n"
    )
    assert runpy.run_path(str(script))["found"] == 3.5


def test_other_calls_and_unreadable_thresholds_give_nothing() -> None:
    model = nn.Linear(2, 2)
    trips = _Trips()
    scope = {"model": model, "trips": trips, "clip_grad_norm_": lambda *a: None}
    # A property is never run; a call or arithmetic is not evaluated; a function merely named
    # like torch's is not torch's.
    assert _threshold_of("torch.nn.utils.clip_grad_norm_(model.parameters(), trips.clip)",
                         scope) is None  # fmt: skip
    assert _threshold_of("torch.nn.utils.clip_grad_norm_(model.parameters(), float(2))",
                         scope) is None  # fmt: skip
    assert _threshold_of("clip_grad_norm_(model.parameters(), 1.0)", scope) is None
    assert _threshold_of("torch.nn.utils.clip_grad_norm_(model.parameters(), -1.0)",
                         scope) is None  # fmt: skip
    assert clip_call.threshold(None) is None


@pytest.mark.parametrize(
    ("coefficient", "expected"),
    [
        (1.0 / (2.0 * 65536), 1.0),  # max_norm against the scaled norm 2 * 65536
        (0.5, 0.0),  # max_norm against the unscaled norm 2
        (0.1, None),  # neither prediction
    ],
)
def test_the_coefficient_says_which_norm_was_compared(
    coefficient: float, expected: float | None
) -> None:
    assert clip_call.before_unscale(2.0, coefficient, 1.0, 65536.0) == expected


def test_a_threshold_above_both_norms_or_no_scale_decides_nothing() -> None:
    assert clip_call.before_unscale(2.0, 1.0, 1e9, 65536.0) is None  # neither clips
    assert clip_call.before_unscale(2.0, 0.5, 1.0, 1.0) is None  # scale 1: the same norm


def _amp_run(capture: Any, settings: dict[str, Any], *, unscale_first: bool) -> dict[str, Any]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu")
    assert scaler.is_enabled()  # CPU autocast scales as CUDA's does
    with trickscope.init(project="p", url=capture.url, **settings) as run:
        run.watch(model, optimizer, every=100)
        for _ in range(6):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = F.cross_entropy(model(torch.randn(16, 6)).float(), torch.zeros(16).long())
            optimizer.zero_grad()
            scaler.scale(loss).backward()
            if unscale_first:
                scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
            scaler.step(optimizer)
            scaler.update()
    assert run.incidents.errors == 0, run.incidents.by_kind
    return capture.captured.points()


def test_a_clip_before_unscale_is_measured_under_a_real_grad_scaler(
    capture: Any, settings: dict[str, Any]
) -> None:
    points = _amp_run(capture, settings, unscale_first=False)
    assert set(points["clip/threshold"].values()) == {0.25}
    assert set(points["clip/before_unscale"].values()) == {1.0}
    assert set(points["clip/observed"].values()) == {1.0}


def test_a_clip_after_unscale_is_measured_as_such(capture: Any, settings: dict[str, Any]) -> None:
    points = _amp_run(capture, settings, unscale_first=True)
    assert set(points["clip/threshold"].values()) == {0.25}
    # Clipped at 0.25 against norms of ~1 (or not clipped where a norm fell below it): never
    # the scaled norm's coefficient.
    assert set(points["clip/before_unscale"].values()) == {0.0}


def test_without_a_scaler_the_threshold_alone_is_reported(
    capture: Any, settings: dict[str, Any]
) -> None:
    model = nn.Linear(6, 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with trickscope.init(project="p", url=capture.url, **settings) as run:
        run.watch(model, optimizer, every=100)
        for _ in range(4):
            optimizer.zero_grad()
            F.cross_entropy(model(torch.randn(8, 6)), torch.zeros(8).long()).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)
            optimizer.step()
    assert run.incidents.errors == 0, run.incidents.by_kind
    points = capture.captured.points()
    assert set(points["clip/threshold"].values()) == {MAX_NORM}
    assert "clip/before_unscale" not in points  # no scaler: nothing to tell


def test_the_training_thread_reads_nothing_back_while_the_clip_is_judged(
    tripwire: Tripwire,  # noqa: F811 - the fixture imported above
    capture: Any,
    settings: dict[str, Any],
) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu")
    run = trickscope.init(project="p", url=capture.url, **settings)
    run.watch(model, optimizer, every=2)
    for _ in range(6):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(torch.randn(16, 6)).float(), torch.zeros(16).long())
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        tripwire.armed = True  # the scaler itself reads found_inf back: only the agent is held
        scaler.step(optimizer)
        tripwire.armed = False
        scaler.update()
    run.finish()
    assert tripwire.trips == []
    assert run.incidents.errors == 0, run.incidents.by_kind
    assert set(capture.captured.points()["clip/before_unscale"].values()) == {1.0}
