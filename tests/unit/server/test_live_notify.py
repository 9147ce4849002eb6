"""Cross-process wake-ups on PostgreSQL: a process alone on its database sends no NOTIFY; once
another one listens, each batch's run reaches it, and when it is gone the notifications stop."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable

import psycopg
import pytest

from tests.helpers import run_async
from trickscope_server.live import Broadcaster, WaitEnd
from trickscope_server.live import notify as notify_module
from trickscope_server.live.notify import PgRelay, libpq_url
from trickscope_server.storage import Database

from .conftest import PG_ENV

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(60)]


class _Woken(Broadcaster):
    """A broadcaster that also records the runs other processes woke it for."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.woken: list[str] = []

    def wake(self, run_id: str) -> None:
        self.woken.append(run_id)
        super().wake(run_id)


@pytest.fixture
def pg_url() -> str:
    url = os.environ.get(PG_ENV)
    if not url:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{PG_ENV} must be set when CI=true")
        pytest.skip(f"{PG_ENV} is not set")
    return url


def _relay(pg_url: str, channel: str, name: str) -> tuple[PgRelay, _Woken, Database]:
    db = Database(pg_url)
    broadcaster = _Woken(db)
    relay = PgRelay(pg_url, broadcaster, channel=channel, name=name)
    relay.start()
    return relay, broadcaster, db


def _heard(pg_url: str, channel: str, during: Callable[[], None], seconds: float) -> list[str]:
    """The payloads an outside listener hears on ``channel`` while ``during`` runs, then for
    ``seconds``."""
    with psycopg.connect(libpq_url(pg_url), autocommit=True) as observer:
        observer.execute(f"LISTEN {channel}")
        during()
        deadline = time.monotonic() + seconds
        heard = []
        while (left := deadline - time.monotonic()) > 0:
            heard += [note.payload for note in observer.notifies(timeout=left, stop_after=1)]
        return heard


def _publish_for(relay: PgRelay, run_id: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        relay.forward(run_id)
        time.sleep(0.02)


def test_a_process_alone_sends_nothing_and_another_one_is_told_each_run(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(notify_module, "PEER_CHECK_SECONDS", 0.3)
    channel = f"t_{uuid.uuid4().hex[:16]}"
    first, _, first_db = _relay(pg_url, channel, "first")
    second = None
    try:
        time.sleep(0.3)  # its listener is up
        alone = _heard(pg_url, channel, lambda: _publish_for(first, "r1", 1.0), 0.3)
        assert alone == []

        second, woken, second_db = _relay(pg_url, channel, "second")
        deadline = time.monotonic() + 5
        while "r2" not in woken.woken and time.monotonic() < deadline:
            first.forward("r2")  # heard from the moment the second process says it is there
            time.sleep(0.05)
        assert "r2" in woken.woken
        told = _heard(pg_url, channel, lambda: _publish_for(first, "r3", 0.3), 0.3)
        assert "first:r3" in told

        second.close()
        second_db.dispose()
        second = None
        time.sleep(0.5)  # past PEER_CHECK_SECONDS: the lock count finds the first alone again
        _publish_for(first, "r4", 0.5)
        again = _heard(pg_url, channel, lambda: _publish_for(first, "r5", 1.0), 0.3)
        assert again == []
    finally:
        if second is not None:
            second.close()
        first.close()
        first_db.dispose()


@pytest.mark.parametrize(
    ("word", "end"),
    [("forward_followed", WaitEnd.FOLLOWED), ("forward_glanced", WaitEnd.GLANCED)],
    ids=["a stream that starts following", "a glance"],
)
def test_a_word_on_a_run_ends_the_waits_for_it_in_other_processes_saying_why(
    pg_url: str, word: str, end: WaitEnd
) -> None:
    channel = f"t_{uuid.uuid4().hex[:16]}"
    first, _, first_db = _relay(pg_url, channel, "first")
    second, woken, second_db = _relay(pg_url, channel, "second")
    tell: Callable[[str], None] = getattr(first, word)

    async def wait_in_second() -> tuple[WaitEnd | None, WaitEnd | None]:
        async with woken.follow_wait("other") as other, woken.follow_wait("r") as wait:
            stop = time.monotonic() + 5
            while time.monotonic() < stop:
                tell("r")  # told once the second process is heard of
                if (ended := await wait(0.1)) is not None:
                    return ended, await other(0.2)
            return None, None

    try:
        ended, other_ended = run_async(wait_in_second)
        assert ended is end, "the other process's word did not end the wait"
        assert other_ended is None  # only that run's waits end
        assert woken.woken == []  # nor is it taken for new points of a run
    finally:
        second.close()
        first.close()
        first_db.dispose()
        second_db.dispose()
