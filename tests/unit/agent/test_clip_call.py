"""The clip call's threshold read from the loop's source, and the clip made before
``GradScaler.unscale_`` told from the one made after it by the measured coefficient."""

from __future__ import annotations

import linecache
import runpy
import sys
import textwrap
from collections.abc import Callable
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


def _threshold_of(calls: str, scope: dict[str, Any]) -> float | None:
    """The threshold found in a function whose source holds ``calls`` (lines), from inside its
    frame."""
    source = (
        "def loop(probe):\n"
        "    if probe is None:  # read, never run\n"
        + textwrap.indent(calls, " " * 8)
        + "\n    return probe()\n"
    )
    namespace = _module(source, {"nn": nn, "MAX_NORM": MAX_NORM, **scope})
    return namespace["loop"](lambda: clip_call.threshold(sys._getframe(1)))


def _module(source: str, scope: dict[str, Any] | None = None, filename: str = "") -> dict[str, Any]:
    """The namespace of ``source`` run as a module of its own (its own globals), its source
    readable as a file's under ``filename``."""
    source = textwrap.dedent(source)
    filename = filename or f"<clip-call-test-{abs(hash(source))}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace: dict[str, Any] = {"torch": torch, **(scope or {})}
    exec(compile(source, filename, "exec"), namespace)  # noqa: S102 - the test's own source
    return namespace


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


# Helpers in a module of their own: their globals are not the loop's.
_HELPERS = """
    from torch.nn.utils import clip_grad_norm_

    HELPER_NORM = 5.0

    def clip_literal(model):
        torch.nn.utils.clip_grad_norm_(model.parameters(), 7.0)

    def clip_gradients(model, max_norm=6.0):
        return torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)

    def clip_global(model):
        clip_grad_norm_(model.parameters(), max_norm=HELPER_NORM)

    clip_lambda = lambda model, limit: clip_grad_norm_(model.parameters(), limit)

    def clip_halved(model, max_norm):
        max_norm = max_norm / 2  # no longer the argument: its value is not in the source
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)

    def via_one(model, limit):
        clip_gradients(model, limit)

    def via_two(model):
        via_one(model, 1.5)

    def clip_closure(limit):
        def clip(model):
            torch.nn.utils.clip_grad_norm_(model.parameters(), limit)
        return clip

    class Trainer:
        CLASS_NORM = 8.5

        def __init__(self, max_norm):
            self.max_norm = max_norm

        def clip(self, model):
            torch.nn.utils.clip_grad_norm_(model.parameters(), self.max_norm)

        @staticmethod
        def clip_static(model, max_norm):
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)

        @classmethod
        def clip_class(cls, model):
            torch.nn.utils.clip_grad_norm_(model.parameters(), cls.CLASS_NORM)
    """


def _helpers() -> dict[str, Any]:
    helpers = _module(_HELPERS)
    trainer = helpers["Trainer"](3.25)
    return {
        **{name: helpers[name] for name in (
            "clip_literal", "clip_gradients", "clip_global", "clip_lambda", "clip_halved",
            "via_one", "via_two", "Trainer")},
        "model": nn.Linear(2, 2),
        "config": SimpleNamespace(grad_clip=3.0),
        "args": (None, 2.0),
        "trainer": trainer,
        "bound_clip": trainer.clip,
        "closure_clip": helpers["clip_closure"](4.25),
        # A function stored on an instance is not bound to it: max_norm is the call's 2.0.
        "tools": SimpleNamespace(clip=helpers["clip_gradients"]),
    }  # fmt: skip


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        ("clip_literal(model)", 7.0),
        ("clip_gradients(model, 1e9)", 1e9),  # the parameter bound positionally
        ("clip_gradients(model, max_norm=MAX_NORM)", MAX_NORM),  # by keyword, the loop's global
        ("clip_gradients(model, config.grad_clip)", 3.0),  # an attribute chain in the loop
        ("clip_gradients(model)", 6.0),  # the default
        ("clip_global(model)", 5.0),  # clip_grad_norm_ and the norm from the helper's globals
        ("clip_lambda(model, 0.5)", 0.5),
        ("closure_clip(model)", 4.25),  # a closure cell
        ("trainer.clip(model)", 3.25),  # self.max_norm, from the instance
        ("bound_clip(model)", 3.25),  # a bound method held in a variable
        ("Trainer.clip_static(model, 4.5)", 4.5),
        ("trainer.clip_class(model)", 8.5),
        ("tools.clip(model, 2.0)", 2.0),
        ("via_one(model, 2.5)", 2.5),  # a helper's helper, the argument passed through
        ("clip_literal(*args)", 7.0),  # arguments not in the source: a literal still reads
    ],
)
def test_a_clip_call_in_a_helper_the_loop_calls_is_read(call: str, expected: float) -> None:
    assert _threshold_of(call, _helpers()) == expected


@pytest.mark.parametrize(
    "call",
    [
        "via_two(model)",  # three calls deep: beyond MAX_HELPER_DEPTH
        "clip_halved(model, 8.0)",  # the parameter is rebound before the clip
        "clip_gradients(*args)",  # which parameter gets what is not in the source
        "clip_literal(model, 2.0)",  # the call does not fit: it raises, nothing clipped
        "clip_gradients(model, float(2))",  # an argument that would have to run
    ],
)
def test_a_helpers_threshold_that_cannot_be_read_gives_nothing(call: str) -> None:
    assert _threshold_of(call, _helpers()) is None


def test_helper_calls_and_the_loops_own_clip_calls_count_in_source_order() -> None:
    helper_first = (
        "clip_gradients(model, 2.0)\ntorch.nn.utils.clip_grad_norm_(model.parameters(), 9.0)"
    )
    clip_first = (
        "torch.nn.utils.clip_grad_norm_(model.parameters(), 9.0)\nclip_gradients(model, 2.0)"
    )
    assert _threshold_of(helper_first, _helpers()) == 2.0
    assert _threshold_of(clip_first, _helpers()) == 9.0


def test_an_installed_packages_function_is_not_followed() -> None:
    source = (
        "def clip_literal(model):\n    torch.nn.utils.clip_grad_norm_(model.parameters(), 7.0)\n"
    )
    installed = _module(source, filename="/opt/env/lib/python3.11/site-packages/cliplib.py")
    scope = {"model": nn.Linear(2, 2), "clip_literal": installed["clip_literal"]}
    assert _threshold_of("clip_literal(model)", scope) is None
    scope["clip_literal"] = _module(source)["clip_literal"]  # the same source, a user's file
    assert _threshold_of("clip_literal(model)", scope) == 7.0


def test_following_helpers_runs_no_user_code() -> None:
    ran: list[str] = []
    helpers = _module(_HELPERS)

    class Lazy(helpers["Trainer"]):  # type: ignore[misc]
        @property
        def max_norm(self) -> float:  # running it would give a threshold
            ran.append("max_norm")
            return 2.0

    class Dynamic:
        def __getattr__(self, name: str) -> Any:
            ran.append(name)
            return helpers["clip_literal"]

    scope = {"model": nn.Linear(2, 2), "lazy": Lazy.__new__(Lazy), "dynamic": Dynamic()}
    assert _threshold_of("lazy.clip(model)", scope) is None
    assert _threshold_of("dynamic.clip(model)", scope) is None
    assert ran == []


def _clip_gradients(model: nn.Module, max_norm: float) -> None:
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)


def test_a_helpers_parameter_is_read_as_the_callers_local_variable() -> None:
    model = nn.Linear(2, 2)
    limit = 1e9
    if limit < 0:  # read, never run
        _clip_gradients(model, limit)
    assert clip_call.threshold(sys._getframe()) == 1e9


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


def _amp_run(
    capture: Any,
    settings: dict[str, Any],
    *,
    unscale_first: bool,
    clip: Callable[[nn.Module], Any] | None = None,
) -> dict[str, Any]:
    """Six steps under a GradScaler, clipped at 0.25 by the loop, or by ``clip``."""
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
            if clip is not None:  # first in the source: the helper's threshold is the one read
                clip(model)
            else:
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


def _clip_at_half(model: nn.Module) -> None:
    _clip_gradients(model, 0.5)


def test_a_clip_before_unscale_in_a_helper_is_measured(
    capture: Any, settings: dict[str, Any]
) -> None:
    # Two calls deep (_clip_at_half, then _clip_gradients), both gone by the step.
    points = _amp_run(capture, settings, unscale_first=False, clip=_clip_at_half)
    assert set(points["clip/threshold"].values()) == {0.5}
    assert set(points["clip/before_unscale"].values()) == {1.0}


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
