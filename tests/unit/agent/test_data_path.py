"""The agent's data path against a real HTTP peer: nothing logged is dropped, the run's creation
comes first, refused requests are set aside, heartbeats, the token, SIGTERM and input repair."""

from __future__ import annotations

import json
import logging
import math
import signal
import threading
import time
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import trickscope
from trickscope import journal
from trickscope._sanitize import MAX_DEPTH, clean_text, json_document
from trickscope.config import AgentConfig
from trickscope.journal import Request
from trickscope.scalars import Columns, Layout, RowBlock, ScalarBuffer, read_overflow
from trickscope.transfer import Handoff
from trickscope_wire import decode_f64, decode_i64

UNREACHABLE = "http://127.0.0.1:9"


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(item) for item in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(item) for item in value), default=0)
    return 0


# -- the packed columns ----------------------------------------------------------------------


def taken_points(buffer: ScalarBuffer, wait: float = -1) -> dict[str, list[tuple[int, float]]]:
    """Every point a take hands over, per series in the order the sender reads them."""
    taken = buffer.take(wait)
    seen: dict[str, list[tuple[int, float]]] = {}
    records: list[tuple[str, Columns] | RowBlock] = []
    for path in taken.files:
        records += read_overflow(path)
    records += taken.series.items()
    records += taken.blocks
    for record in records:
        pairs = record.columns() if isinstance(record, RowBlock) else [record]
        for name, columns in pairs:
            seen.setdefault(name, []).extend(zip(columns.steps, columns.values, strict=True))
    return seen


def test_scalar_buffer_spills_past_its_bound_and_gives_back_every_point_in_order(
    tmp_path: Path,
) -> None:
    """Series and row blocks, a name moving between a layout and a series of its own, spilled
    and in memory: every point comes back once, in order, NaN and Inf included."""
    buffer = ScalarBuffer(max_bytes=24 * 100, overflow_dir=tmp_path, stem="r", flush_points=10**9)
    wide, narrow = Layout(("w", "v", "c")), Layout(("w", "v"))
    want: dict[str, list[tuple[int, float]]] = {}
    for step in range(1200):
        buffer.add_point("a", step, float(step), 1.0)
        want.setdefault("a", []).append((step, float(step)))
        if step % 3 == 0:
            buffer.add(step, 2.0, [("b", -float(step)), ("c", math.nan)])
            want.setdefault("b", []).append((step, -float(step)))
            want.setdefault("c", []).append((step, math.nan))
        elif step % 3 == 1 or step > 1100:  # rows alone at the end, in memory
            buffer.add_row(wide, step, 3.0, array("d", [step, math.inf, -math.inf]))
            for name, value in zip(wide.names, (step, math.inf, -math.inf), strict=True):
                want.setdefault(name, []).append((step, value))
        elif step % 50 == 2:
            buffer.add_row(narrow, step, 3.0, array("d", [step, -step]))
            want["w"].append((step, step))
            want["v"].append((step, -step))
    buffer.add_point("w", 5000, 7.0, 3.0)  # one of wide's series on its own, after its rows
    want["w"].append((5000, 7.0))
    assert buffer.spilled_points > 0 and buffer.count < 100
    seen = taken_points(buffer)
    assert list(seen) and all(path.name.startswith("r.overflow.") for path in tmp_path.iterdir())
    assert seen.keys() == want.keys()
    for name, points in want.items():
        assert [step for step, _ in seen[name]] == [step for step, _ in points], name
        assert [str(value) for _, value in seen[name]] == [str(float(value)) for _, value in points]
    assert not buffer.take()  # all handed over once


def test_a_step_outside_int64_raises_before_anything_is_appended(tmp_path: Path) -> None:
    buffer = ScalarBuffer(max_bytes=1 << 20, overflow_dir=tmp_path, stem="r", flush_points=10)
    layout = Layout(("x", "y"))
    with pytest.raises(OverflowError):
        buffer.add_point("a", 2**63, 1.0, 0.0)
    with pytest.raises(TypeError):
        buffer.add(0, 0.0, [("a", "text")])  # type: ignore[list-item]
    with pytest.raises(OverflowError):
        buffer.add_row(layout, 2**63, 0.0, array("d", [1.0, 2.0]))
    buffer.add_point("a", 1, 1.0, 0.0)
    buffer.add_row(layout, 1, 0.0, array("d", [1.0, 2.0]))
    assert taken_points(buffer) == {"a": [(1, 1.0)], "x": [(1, 1.0)], "y": [(1, 2.0)]}


def test_take_trims_a_half_appended_point_when_the_lock_is_held(tmp_path: Path) -> None:
    """What the final take meets when SIGTERM interrupted the training thread inside add."""
    buffer = ScalarBuffer(max_bytes=1 << 20, overflow_dir=tmp_path, stem="r", flush_points=10)
    layout = Layout(("x", "y"))
    buffer.add_point("a", 0, 1.0, 0.0)
    buffer.add_row(layout, 0, 0.0, array("d", [1.0, 2.0]))
    buffer._lock.acquire()  # the interrupted thread holds it
    buffer._series["a"].values.append(2.0)  # ... and appended the value, not the step
    buffer._blocks[layout].steps.append(1)  # ... and a row's step, not its values
    assert taken_points(buffer, wait=0.05) == {"a": [(0, 1.0)], "x": [(0, 1.0)], "y": [(0, 2.0)]}


def test_a_held_parcel_reads_the_tensor_it_holds() -> None:
    parcel = Handoff(slots=1).ship_or_hold(torch.tensor([1.5, -2.0]))
    assert parcel.values() == [1.5, -2.0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_logged_tensors_are_kept_when_every_pinned_buffer_is_in_flight() -> None:
    ring = Handoff(slots=1)
    first = ring.ship(torch.ones(3, device="cuda"))
    assert first is not None and ring.ship(torch.ones(3, device="cuda")) is None
    held = ring.ship_or_hold(torch.full((2,), 7.0, device="cuda"))
    assert held.values() == [7.0, 7.0] and first.values() == [1.0, 1.0, 1.0]


# -- nothing logged is dropped, and the run comes first ------------------------------------------


def test_a_tight_loop_with_a_tiny_queue_loses_no_logged_point_and_creates_the_run_first(
    capture: Any, settings: dict[str, Any]
) -> None:
    """Thinning starts before the sender thread ran once: its count used to be flushed ahead of
    the run's creation, so the server saw points for a run it did not know (404)."""
    model = nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    run = trickscope.init(project="p", url=capture.url, queue_size=1, **settings)
    run.watch(model, optimizer, every=1)
    for _ in range(50):
        optimizer.zero_grad()
        model(torch.randn(2, 4)).sum().backward()
        optimizer.step()
    for step in range(50, 50_050):
        run.log({"x": float(step)}, step=step)
    run.finish()
    requests = capture.captured.snapshot()
    assert (requests[0][0], requests[0][1]) == ("PUT", f"/api/v1/runs/{run.id}")
    points = capture.captured.points()
    assert points["x"] == {step: float(step) for step in range(50, 50_050)}
    assert run.incidents.errors == 0 and run.sender is not None
    assert run.sender.dead_lettered == 0


# -- refused requests are set aside ----------------------------------------------------------


def _names(body: dict[str, Any]) -> set[str]:
    return {series["name"] for series in body.get("series", [])}


def test_a_refused_request_is_set_aside_once_and_the_rest_goes_on(
    capture: Any, settings: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    capture.captured.status = lambda method, path, body: 422 if "bad" in _names(body) else 200
    bad = b'{"series":[{"name":"bad"}]}'
    with caplog.at_level(logging.WARNING, logger="trickscope"):
        run = trickscope.init(project="p", url=capture.url, **settings)
        for step in range(20):
            run.log({"good": float(step)}, step=step)
            if step in (5, 15):
                run.sender.request(Request("POST", f"/api/v1/runs/{run.id}/points", bad))  # type: ignore[union-attr]
        run.finish()
    sender = run.sender
    assert sender is not None and sender.dead_lettered == 2
    assert capture.captured.snapshot()[-1][2]["status"] == "finished"
    assert capture.captured.points()["good"] == {step: float(step) for step in range(20)}
    assert sender.dead_letter_path is not None
    set_aside = list(journal.read(sender.dead_letter_path))
    assert len(set_aside) == sender.dead_lettered
    assert all(request.path.endswith("/points") for request in set_aside)
    refusals = [record for record in caplog.records if "refused" in record.getMessage()]
    assert len(refusals) == 1 and "422" in refusals[0].getMessage()
    assert all(record.exc_info is None for record in caplog.records)  # no traceback


def test_a_request_failing_with_500_is_set_aside_after_n_attempts(
    capture: Any, settings: dict[str, Any]
) -> None:
    attempts = {"poison": 0}

    def status(method: str, path: str, body: dict[str, Any]) -> int:
        if "poison" in _names(body):
            attempts["poison"] += 1
            return 500
        return 200

    capture.captured.status = status
    run = trickscope.init(project="p", url=capture.url, dead_letter_after=3, **settings)
    run.log({"before": 1.0}, step=0)
    time.sleep(0.2)
    run.sender.request(  # type: ignore[union-attr]
        Request("POST", f"/api/v1/runs/{run.id}/points", b'{"series":[{"name":"poison"}]}')
    )
    time.sleep(0.05)
    run.log({"after": 2.0}, step=1)
    run.finish()
    assert attempts["poison"] == 3
    assert capture.captured.points() == {"before": {0: 1.0}, "after": {1: 2.0}}
    assert capture.captured.snapshot()[-1][2]["status"] == "finished"
    assert run.sender is not None and run.sender.dead_lettered == 1


def test_an_overloaded_server_503_is_waited_out_not_set_aside(
    capture: Any, settings: dict[str, Any]
) -> None:
    answers = iter([503, 503, 503])
    capture.captured.status = lambda method, path, body: next(answers, 200)
    run = trickscope.init(project="p", url=capture.url, dead_letter_after=2, **settings)
    for step in range(10):
        run.log({"m": float(step)}, step=step)
    run.finish()
    assert run.sender is not None and run.sender.dead_lettered == 0
    assert capture.captured.points()["m"] == {step: float(step) for step in range(10)}


# -- heartbeat, token, finish ------------------------------------------------------------------


def test_an_idle_run_sends_heartbeats_with_its_token(
    capture: Any, settings: dict[str, Any], wait_for: Callable[..., None]
) -> None:
    run = trickscope.init(
        project="p", url=capture.url, token="s3cret", heartbeat_secs=0.2, **settings
    )
    run.log({"m": 1.0}, step=0)
    heartbeat = f"/api/v1/runs/{run.id}/heartbeat"
    wait_for(lambda: sum(path == heartbeat for _, path, _ in capture.captured.snapshot()) >= 2)
    run.finish()
    requests = capture.captured.snapshot()
    beats = [(index, body) for index, (_, path, body) in enumerate(requests) if path == heartbeat]
    assert all(body == {} for _, body in beats)
    for headers in capture.captured.headers:
        assert headers["Authorization"] == "Bearer s3cret"
        assert headers["Content-Type"] == "application/json"
    assert run.sender is not None and run.sender.heartbeats >= 2
    assert not list((settings["journal_dir"]).glob("*.jsonl"))  # never journaled


def test_token_comes_from_the_environment_and_stays_out_of_reprs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRICKSCOPE_TOKEN", "from-env")
    config = AgentConfig.from_env()
    assert config.token == "from-env" and "from-env" not in repr(config)
    assert AgentConfig.from_env(token="given").token == "given"
    with pytest.raises(ValueError, match="token"):
        AgentConfig(token="two\nlines")


def test_finish_with_the_server_down_says_so_once_and_is_short(
    settings: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    assert AgentConfig().finish_timeout == 10.0
    with caplog.at_level(logging.WARNING, logger="trickscope"):
        run = trickscope.init(project="p", url=UNREACHABLE, **{**settings, "finish_timeout": 0.5})
        run.log({"m": 1.0}, step=0)
        time.sleep(0.2)
        started = time.monotonic()
        run.finish()
    # Bounded by finish_timeout=0.5 (plus a loaded machine's seconds), not the default 10 s.
    assert time.monotonic() - started < 8.0
    waiting = [r for r in caplog.records if "is not answering" in r.getMessage()]
    assert len(waiting) == 1 and "finish_timeout" in waiting[0].getMessage()
    assert all(record.exc_info is None for record in caplog.records)


def test_finish_cuts_a_request_the_server_took_but_never_answers_and_journals_it(
    capture: Any, settings: dict[str, Any]
) -> None:
    """A server that reads a request and then hangs must not hold ``finish`` for the socket's
    whole ``http_timeout``: past ``finish_timeout`` the request is cut and its points journaled."""
    release = threading.Event()
    hung = threading.Event()

    def status(method: str, path: str, body: dict[str, Any]) -> int:
        if path.endswith("/points"):
            hung.set()
            release.wait(60.0)  # took the request; never answers while the test runs
        return 200

    capture.captured.status = status
    run = trickscope.init(
        project="p", url=capture.url, **{**settings, "finish_timeout": 1.0, "http_timeout": 60.0}
    )
    try:
        for step in range(5):
            run.log({"m": float(step)}, step=step)
        assert hung.wait(10.0)
        started = time.monotonic()
        run.finish()
        elapsed = time.monotonic() - started
    finally:
        release.set()
    # finish_timeout (1 s) plus the final take's wait, and a loaded machine's seconds; not 60 s.
    assert elapsed < 10.0
    sender = run.sender
    assert sender is not None and sender.journal_path is not None
    journaled: dict[int, float] = {}
    for request in journal.read(sender.journal_path):
        if request.path.endswith("/points"):
            for series in json.loads(request.body)["series"]:
                if series["name"] == "m":
                    steps, values = decode_i64(series["steps"]), decode_f64(series["values"])
                    journaled.update(zip(steps, values, strict=True))
    assert journaled == {step: float(step) for step in range(5)}


# -- SIGTERM -----------------------------------------------------------------------------------


def test_finish_from_the_thread_holding_the_logged_points_lock_is_prompt_and_loses_nothing(
    capture: Any, settings: dict[str, Any]
) -> None:
    """SIGTERM's handler finishes the run on the training thread, which it may have interrupted
    inside ``run.log`` holding the logged points' lock: the sender must not wait on it for ever
    (it did until close's join gave up, 3 + http_timeout + 1 s, and the finish never went)."""
    run = trickscope.init(project="p", url=capture.url, **settings)
    for step in range(3):
        run.log({"m": float(step)}, step=step)
    sender = run.sender
    assert sender is not None
    sender.scalars._lock.acquire()  # the interrupted training thread holds it
    started = time.monotonic()
    try:
        run.finish("crashed", timeout=3.0)
    finally:
        sender.scalars._lock.release()
    # About _FINAL_TAKE_WAIT (1 s) after close; a loaded machine adds seconds, never 14.
    assert time.monotonic() - started < 8.0
    assert capture.captured.points()["m"] == {0: 0.0, 1: 1.0, 2: 2.0}
    assert capture.captured.snapshot()[-1][1] == f"/api/v1/runs/{run.id}/finish"
    assert run.incidents.errors == 0


def test_sigterm_handler_is_installed_only_over_the_default_and_removed_on_finish(
    settings: dict[str, Any],
) -> None:
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    run = trickscope.init(project="p", url=UNREACHABLE, offline=True, **settings)
    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    run.finish()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL

    def mine(signum: int, frame: object) -> None:
        pass

    signal.signal(signal.SIGTERM, mine)
    try:
        run = trickscope.init(project="p", url=UNREACHABLE, offline=True, **settings)
        assert signal.getsignal(signal.SIGTERM) is mine
        run.finish()
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


# -- input the server cannot store -------------------------------------------------------------


def test_text_the_server_cannot_store_is_repaired() -> None:
    assert clean_text("a\x00b") == "a\ufffdb"
    assert clean_text("x\ud800y") == "x\ufffdy"
    assert clean_text("\ud83d\ude00") == "\U0001f600"  # a well-formed pair is one character
    assert clean_text("abcdef", 3) == "abc"
    assert clean_text("plain") == "plain"


def test_config_documents_are_cut_to_the_servers_limits() -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(300):
        node["d"] = {}
        node = node["d"]
    document = json_document(
        {
            "deep": deep,
            "nan": math.nan,
            "inf": [math.inf, -math.inf],
            "k\x00ey": "v\ud800",
            "big": "x" * (2 << 20),
            "small": 1,
        }
    )
    assert _depth(document) <= MAX_DEPTH
    assert document["nan"] == "NaN" and document["inf"] == ["Infinity", "-Infinity"]
    assert document["k\ufffdey"] == "v\ufffd"
    assert document["small"] == 1 and document["big"].endswith("cut to fit)")
    assert len(json_document({"a": document}).__repr__()) < 1 << 20


def test_a_hostile_config_tags_and_names_reach_the_wire_repaired(
    capture: Any, settings: dict[str, Any]
) -> None:
    tags = ["ok", "t\x00", "\udc80"] + [f"t{i}" for i in range(300)] + ["y" * 300]
    with trickscope.init(
        project="p\x00", name="n\ud800", config={"a": math.nan}, tags=tags, url=capture.url,
        **settings,
    ) as run:  # fmt: skip
        run.log({"loss\x00x": 1.0, "z" * 600: 2.0}, step=0)
    create = capture.captured.snapshot()[0][2]
    assert create["project"] == "p\ufffd" and create["name"] == "n\ufffd"
    assert create["config"] == {"a": "NaN"}
    assert len(create["tags"]) == 256 and create["tags"][:3] == ["ok", "t\ufffd", "\ufffd"]
    assert set(capture.captured.points()) == {"loss\ufffdx", "z" * 512}


def test_a_value_log_cannot_take_is_one_line_without_a_traceback(
    capture: Any, settings: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="trickscope"):
        with trickscope.init(project="p", url=capture.url, **settings) as run:
            run.log({"s": "text"}, step=0)  # type: ignore[dict-item]
            run.log({"big": 1.0}, step=2**63)
            run.log({"ok": 1.0}, step=1)
    assert run.incidents.errors == 2
    assert [r for r in caplog.records if "log failed" in r.getMessage()]
    assert all(record.exc_info is None for record in caplog.records)
    assert capture.captured.points() == {"ok": {1: 1.0}}


FRAMEWORK_RESTORES_HANDLERS = """
import os, signal
from trickscope import _signals

saved = {}
_signals.watch_sigterm(1, lambda status, timeout: None)
saved["term"] = signal.getsignal(signal.SIGTERM)  # a framework records the handlers at fit start
signal.signal(signal.SIGTERM, lambda *args: None)  # ... installs its own
_signals.unwatch_sigterm(1)  # the run finishes while the framework's handler is in place
signal.signal(signal.SIGTERM, saved["term"])  # ... and restores what it recorded at teardown
assert signal.getsignal(signal.SIGTERM) is _signals._on_sigterm
_signals.watch_sigterm(2, lambda status, timeout: None)  # a later run takes it over
_signals.unwatch_sigterm(2)
assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
signal.signal(signal.SIGTERM, _signals._on_sigterm)  # left behind with no run open
os.kill(os.getpid(), signal.SIGTERM)
raise SystemExit("SIGTERM did not end the process")
"""


def test_a_handler_left_behind_by_a_framework_still_ends_the_process_on_sigterm() -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", FRAMEWORK_RESTORES_HANDLERS],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == -signal.SIGTERM, result.stderr
