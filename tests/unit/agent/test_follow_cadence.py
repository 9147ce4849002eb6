"""Logged points go every ``flush_secs`` while the server says someone follows the run live, and
every ``unfollowed_flush_secs`` while it says nobody does; nothing is lost either way. Meanwhile
the agent holds a wait for a follower, which brings the fast cadence back as soon as one comes."""

from __future__ import annotations

import threading
import time
from typing import Any
from unittest import mock

import pytest

import trickscope
from tests.unit.agent.conftest import _wait_for
from trickscope.config import AgentConfig
from trickscope.delivery import followed
from trickscope.follow import SHORT_WAIT_SECONDS, WAIT_SECONDS

NOBODY = b'{"accepted": 1, "duplicate": false, "followed": false}'
SOMEBODY = b'{"accepted": 1, "duplicate": false, "followed": true}'


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (NOBODY, False),
        (SOMEBODY, True),
        (b'{"accepted": 1, "duplicate": false}', True),  # a server older than the field
        (b"{}", True),
        (b"[]", True),
        (b"not json", True),
        (b'{"followed": "no"}', True),  # only a boolean counts
    ],
)
def test_an_answer_slows_the_cadence_only_when_it_says_nobody_follows(
    answer: bytes, expected: bool
) -> None:
    assert followed(answer) is expected


def _points_requests(capture: Any) -> int:
    return sum(path.endswith("/points") for _, path, _ in capture.captured.snapshot())


def _log_for(run: trickscope.Run, seconds: float, first_step: int) -> int:
    """Log a step every ~5 ms for ``seconds``; returns the next step."""
    step = first_step
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        run.log({"loss": float(step)}, step=step)
        step += 1
        time.sleep(0.005)
    return step


def test_the_sender_flushes_rarely_while_nobody_follows_and_often_once_someone_does(
    capture: Any, settings: dict[str, Any]
) -> None:
    capture.captured.answer = NOBODY
    run = trickscope.init(
        project="p", url=capture.url, **settings | {"flush_secs": 0.03}, unfollowed_flush_secs=0.6
    )
    step = _log_for(run, 0.3, 0)  # the first flush goes at the fast cadence, and is answered
    unfollowed_from = _points_requests(capture)
    assert unfollowed_from >= 1
    step = _log_for(run, 1.8, step)
    # At 0.6 s, ~3 flushes; at the fast cadence it would have been ~60.
    slow = _points_requests(capture) - unfollowed_from
    assert 1 <= slow <= 6, slow

    capture.captured.answer = SOMEBODY  # a stream opened: the next answer says so
    followed_from = _points_requests(capture)
    step = _log_for(run, 1.5, step)
    fast = _points_requests(capture) - followed_from
    # One more slow flush at most (≤ 0.6 s), then one every 0.03 s: ~30 or more.
    assert fast >= 10, fast
    run.finish()
    assert sorted(capture.captured.points()["loss"]) == list(range(step))


def test_a_run_flushes_at_flush_secs_when_its_server_does_not_say(
    capture: Any, settings: dict[str, Any]
) -> None:
    run = trickscope.init(
        project="p", url=capture.url, **settings | {"flush_secs": 0.03}, unfollowed_flush_secs=5.0
    )
    step = _log_for(run, 1.0, 0)
    assert _points_requests(capture) >= 8  # every 0.03 s: ~30
    run.finish()
    assert sorted(capture.captured.points()["loss"]) == list(range(step))


@pytest.mark.parametrize(
    ("flush_secs", "unfollowed_flush_secs", "interval"),
    [
        (0.5, None, 300.0),  # the defaults
        (0.02, None, 12.0),  # a script that asked for a short wait keeps a shorter one
        (0.1, None, 60.0),  # 600 times flush_secs
        (1.0, None, 300.0),  # at most 300 s
        (400.0, None, 400.0),  # never shorter than flush_secs
        (0.1, 3.0, 3.0),  # as set
        (1.0, 0.5, 1.0),  # as set, never shorter than flush_secs
    ],
)
def test_the_unfollowed_cadence_follows_flush_secs_unless_it_is_set(
    flush_secs: float, unfollowed_flush_secs: float | None, interval: float
) -> None:
    config = AgentConfig(flush_secs=flush_secs, unfollowed_flush_secs=unfollowed_flush_secs)
    assert config.unfollowed_interval == interval


def test_the_unfollowed_cadence_is_a_checked_setting_with_its_variable() -> None:
    config = AgentConfig.from_env({"TRICKSCOPE_UNFOLLOWED_FLUSH_SECS": "3.5"})
    assert config.unfollowed_flush_secs == 3.5
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="unfollowed_flush_secs="):
            AgentConfig(unfollowed_flush_secs=bad)


def test_a_follower_that_arrives_is_heard_of_at_once_not_at_the_next_slow_flush(
    capture: Any, settings: dict[str, Any]
) -> None:
    capture.captured.answer = NOBODY
    arrived = threading.Event()

    def held(path: str) -> bytes:  # as the server holds the wait until a stream opens
        arrived.wait(timeout=30)
        return b'{"followed": true}' if arrived.is_set() else b'{"followed": false}'

    capture.captured.on_get = held
    run = trickscope.init(
        project="p", url=capture.url, **settings | {"flush_secs": 0.03}, unfollowed_flush_secs=30
    )
    step = _log_for(run, 0.3, 0)  # the first flush is answered: nobody follows
    _wait_for(lambda: bool(capture.captured.gets))  # and the agent waits for a follower
    assert capture.captured.gets[0] == f"/api/v1/runs/{run.id}/followed?wait={WAIT_SECONDS:g}"
    before = _points_requests(capture)
    step = _log_for(run, 0.5, step)
    assert _points_requests(capture) == before  # held: the slow cadence is 30 s

    capture.captured.answer = SOMEBODY
    arrived.set()  # a page opened
    opened = time.monotonic()
    _wait_for(lambda: _points_requests(capture) > before)
    assert time.monotonic() - opened < 2  # at once, not in up to 30 s
    step = _log_for(run, 0.5, step)
    assert _points_requests(capture) - before >= 5  # and at the fast cadence from there
    run.finish()
    assert sorted(capture.captured.points()["loss"]) == list(range(step))
    assert len(capture.captured.gets) == 1  # followed since: no request held


def test_a_glance_has_the_held_points_sent_at_once_and_the_cadence_stay_slow(
    capture: Any, settings: dict[str, Any]
) -> None:
    """The runs list showed the run: the wait ends with ``glanced``, the agent sends what it
    holds, statistics and histograms included, and waits again at its slow cadence."""
    capture.captured.answer = NOBODY
    glance = threading.Event()
    never = threading.Event()

    def held(path: str) -> bytes:  # the first wait ends with a glance, the next ones are held
        if len(capture.captured.gets) == 1:
            glance.wait(timeout=30)
            return b'{"followed": false, "glanced": true}'
        never.wait(timeout=30)
        return b'{"followed": false, "glanced": false}'

    capture.captured.on_get = held
    run = trickscope.init(
        project="p", url=capture.url, **settings | {"flush_secs": 0.03}, unfollowed_flush_secs=30
    )
    step = _log_for(run, 0.3, 0)  # the first flush is answered: nobody follows
    _wait_for(lambda: bool(capture.captured.gets))
    step = _log_for(run, 0.3, step)
    before = _points_requests(capture)
    sent_before = sorted(capture.captured.points()["loss"])
    assert sent_before[-1] < step - 1  # the last steps are held

    glance.set()
    glanced = time.monotonic()
    _wait_for(lambda: _points_requests(capture) > before)
    assert time.monotonic() - glanced < 2  # at once, not in up to 30 s
    assert sorted(capture.captured.points()["loss"])[-1] >= step - 1  # with what was held
    _wait_for(lambda: len(capture.captured.gets) == 2)  # waiting again
    after = _points_requests(capture)
    step = _log_for(run, 0.5, step)
    assert _points_requests(capture) == after  # still the slow cadence
    assert not run.sender.delivery.followed  # type: ignore[union-attr]
    never.set()
    run.finish()
    assert sorted(capture.captured.points()["loss"]) == list(range(step))


def test_a_server_that_refuses_a_long_wait_gets_waits_as_long_as_a_heartbeat(
    capture: Any, settings: dict[str, Any]
) -> None:
    """A server from before long waits refuses ``wait`` over 60 s (422) and stamps the run only
    when a wait starts: the agent then asks for ``heartbeat_secs`` (at most 50 s)."""
    capture.captured.answer = NOBODY

    def older_server(path: str) -> tuple[int, bytes]:
        if float(path.rsplit("=", 1)[1]) > 60:
            return 422, b'{"detail": "wait: Input should be less than or equal to 60"}'
        time.sleep(0.1)
        return 200, b'{"followed": false}'

    capture.captured.on_get = older_server
    run = trickscope.init(
        project="p", url=capture.url, **settings, unfollowed_flush_secs=30, heartbeat_secs=0.2
    )
    run.log({"loss": 1.0}, step=0)
    _wait_for(lambda: len(capture.captured.gets) >= 3)
    run.finish()
    waits = [path.rsplit("=", 1)[1] for path in capture.captured.gets]
    assert waits[0] == f"{WAIT_SECONDS:g}" and set(waits[1:]) == {"0.2"}, waits
    assert SHORT_WAIT_SECONDS < 60 < WAIT_SECONDS
    assert run.incidents.errors == 0


def test_a_server_without_the_wait_leaves_the_cadence_to_the_answers(
    capture: Any, settings: dict[str, Any]
) -> None:
    capture.captured.answer = NOBODY  # GET answered 404: an older server
    run = trickscope.init(
        project="p", url=capture.url, **settings | {"flush_secs": 0.03}, unfollowed_flush_secs=0.2
    )
    step = _log_for(run, 1.0, 0)
    assert len(capture.captured.gets) == 1  # tried once, then left alone
    assert run.sender.follow_watch is not None  # type: ignore[union-attr]
    capture.captured.answer = SOMEBODY
    step = _log_for(run, 0.6, step)
    assert run.sender.flush_interval() == 0.03  # type: ignore[union-attr]
    run.finish()
    assert sorted(capture.captured.points()["loss"]) == list(range(step))


def test_finishing_cuts_a_held_wait_at_once(capture: Any, settings: dict[str, Any]) -> None:
    capture.captured.answer = NOBODY
    never = threading.Event()

    def held(path: str) -> bytes:  # nobody comes while the run lasts
        never.wait(30)
        return b'{"followed": false}'

    capture.captured.on_get = held
    run = trickscope.init(project="p", url=capture.url, **settings, unfollowed_flush_secs=30)
    run.log({"loss": 1.0}, step=0)
    _wait_for(lambda: bool(capture.captured.gets))
    started = time.monotonic()
    run.finish()
    assert time.monotonic() - started < 5
    watch = run.sender.follow_watch  # type: ignore[union-attr]
    assert watch is not None and not watch._thread.is_alive()
    never.set()


def _heartbeats(capture: Any) -> int:
    return sum(path.endswith("/heartbeat") for _, path, _ in capture.captured.snapshot())


def test_no_heartbeat_goes_while_a_wait_for_a_follower_says_the_run_is_alive(
    capture: Any, settings: dict[str, Any]
) -> None:
    """The server stamps a run seen when a wait starts: heartbeats would only repeat it. Once
    the waits end (here: a server without the route), heartbeats come back."""
    capture.captured.answer = NOBODY

    def held(path: str) -> bytes:
        time.sleep(0.2)
        return b'{"followed": false}'

    capture.captured.on_get = held
    run = trickscope.init(
        project="p", url=capture.url, **settings, unfollowed_flush_secs=30, heartbeat_secs=0.2
    )
    run.log({"loss": 1.0}, step=0)
    _wait_for(lambda: len(capture.captured.gets) >= 2)  # a wait answered, the next one held
    time.sleep(0.1)
    before = _heartbeats(capture)
    time.sleep(1.2)  # six heartbeat periods
    assert _heartbeats(capture) == before
    capture.captured.on_get = None  # the next wait is refused: the watch ends
    _wait_for(lambda: _heartbeats(capture) >= before + 2)
    run.finish()


@pytest.mark.parametrize(
    "state", ["followed", "held wait", "no wait route", "server refuses", "offline"]
)
def test_the_sender_sleeps_between_its_wake_ups_in_every_state(
    capture: Any, settings: dict[str, Any], state: str
) -> None:
    """Whatever the run's state, the sender thread wakes a few times a second at most. Past
    ``heartbeat_secs`` without a request, with a held wait standing for the heartbeats, it once
    woke at once again and again (~50,000 times a second), holding the GIL: a CPU training
    loop ran several times slower."""
    refusing = threading.Event()
    never = threading.Event()
    capture.captured.answer = SOMEBODY if state == "followed" else NOBODY
    capture.captured.status = lambda method, path, body: 503 if refusing.is_set() else 200

    def held(path: str) -> bytes:  # nobody comes while the run lasts
        never.wait(30)
        return b'{"followed": false}'

    if state == "held wait":
        capture.captured.on_get = held
    run = trickscope.init(
        project="p",
        url=capture.url,
        **settings | {"flush_secs": 0.25},
        unfollowed_flush_secs=30,
        heartbeat_secs=0.2,
        offline=state == "offline",
    )
    sender = run.sender
    assert sender is not None
    run.log({"loss": 1.0}, step=0)
    if state != "offline":
        _wait_for(lambda: sender.delivered > 0)
    if state == "server refuses":
        refusing.set()
        run.log({"loss": 2.0}, step=1)
        _wait_for(lambda: sender.delivery.failures > 0)
    time.sleep(0.5)  # past heartbeat_secs since the last request
    with mock.patch.object(sender.delivery, "due", wraps=sender.delivery.due) as due:
        time.sleep(1.0)
    # A wake-up per 0.5 s, per flush_secs' copy to disk, per heartbeat or retry: ~4-8.
    assert due.call_count <= 15, f"{due.call_count} wake-ups in a second"
    never.set()
    refusing.clear()
    run.finish()
