"""Logged points go every ``flush_secs`` while the server says someone follows the run live, and
every ``unfollowed_flush_secs`` while it says nobody does; nothing is lost either way."""

from __future__ import annotations

import time
from typing import Any

import pytest

import trickscope
from trickscope.config import AgentConfig
from trickscope.delivery import followed

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
        (0.5, None, 2.0),  # the defaults
        (0.02, None, 0.08),  # a script that asked for a short wait keeps one
        (1.0, None, 2.0),  # four times, at most 2 s
        (5.0, None, 5.0),  # never shorter than flush_secs
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
