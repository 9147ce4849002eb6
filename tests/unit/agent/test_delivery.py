"""Delivery on its own, against a real HTTP peer: order, refusals, outages, spill and finish."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trickscope import journal
from trickscope._incidents import Incidents
from trickscope.config import AgentConfig
from trickscope.delivery import Delivery
from trickscope.journal import Request

RUN = "a" * 32


def _request(number: int, size: int = 0) -> Request:
    body = json.dumps({"batch_id": f"b{number}", "pad": "x" * size}).encode()
    return Request("POST", f"/api/v1/runs/{RUN}/points", body)


def _numbers(requests: list[tuple[str, str, dict[str, Any]]]) -> list[int]:
    return [int(body["batch_id"][1:]) for _, _, body in requests if "batch_id" in body]


def _delivery(url: str, tmp_path: Path, **settings: Any) -> Delivery:
    config = AgentConfig.from_env({}, url=url, journal_dir=tmp_path, **settings)
    return Delivery(config, RUN, Incidents(), journal_stem=RUN)


def _deliver_until(delivery: Delivery, done: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "not delivered before the deadline"
        delivery.deliver()
        time.sleep(0.01)


def test_a_refused_request_is_set_aside_at_once_and_the_next_goes(
    capture: Any, tmp_path: Path
) -> None:
    capture.captured.status = lambda method, path, body: 422 if body["batch_id"] == "b1" else 200
    delivery = _delivery(capture.url, tmp_path)
    for number in range(3):
        delivery.put(_request(number))
    delivery.deliver()
    assert _numbers(capture.captured.snapshot()) == [0, 2]
    assert (delivery.delivered, delivery.dead_lettered, delivery.failures) == (2, 1, 0)
    journal_path, dead_path = delivery.finish(time.monotonic() + 1.0)
    delivery.close()
    assert journal_path is None and dead_path == tmp_path / f"{RUN}.dead.jsonl"
    assert [json.loads(r.body)["batch_id"] for r in journal.read(dead_path)] == ["b1"]


def test_a_500_is_retried_then_set_aside_and_an_outage_is_waited_out(
    capture: Any, tmp_path: Path
) -> None:
    answers = {"b0": [500, 500, 500], "b1": [503, 429, 502, 504]}

    def status(method: str, path: str, body: dict[str, Any]) -> int:
        pending = answers.get(body["batch_id"], [])
        return pending.pop(0) if pending else 200

    capture.captured.status = status
    delivery = _delivery(capture.url, tmp_path, dead_letter_after=3)
    delivery.put(_request(0))
    delivery.put(_request(1))
    _deliver_until(delivery, lambda: not delivery.backlog)
    # b0 failed with a 500 three times: the request is at fault, set aside. b1's four 5xx/429
    # answers are an outage: waited out (more than dead_letter_after), then delivered.
    assert _numbers(capture.captured.snapshot()) == [1]
    assert (delivery.delivered, delivery.dead_lettered) == (1, 1)
    assert answers == {"b0": [], "b1": []}
    delivery.close()


def test_past_the_cap_the_oldest_spill_and_go_first_in_order(capture: Any, tmp_path: Path) -> None:
    cap = 4096
    delivery = _delivery(capture.url, tmp_path, max_buffer_bytes=cap)
    for number in range(10):
        delivery.put(_request(number, size=900), held_bytes=1000)
        assert delivery.outbox_bytes <= cap
    assert delivery.journal.pending  # the oldest went to disk, not away
    assert delivery.peak_buffer_bytes <= cap + delivery.peak_request_bytes
    _deliver_until(delivery, lambda: not delivery.backlog)
    assert _numbers(capture.captured.snapshot()) == list(range(10))
    assert delivery.finish(time.monotonic() + 1.0) == (None, None)  # journal delivered, removed
    delivery.close()
    assert not list(tmp_path.glob("*.jsonl"))


def test_a_server_down_at_finish_leaves_the_rest_in_the_journal(tmp_path: Path) -> None:
    delivery = _delivery("http://127.0.0.1:9", tmp_path)  # the discard port: refused at once
    for number in range(3):
        delivery.put(_request(number))
    delivery.deliver()
    assert delivery.failures == 1 and delivery.due(time.monotonic()) is not None
    started = time.monotonic()
    journal_path, dead_path = delivery.finish(time.monotonic() + 0.5)
    delivery.close()
    assert time.monotonic() - started < 5.0 and dead_path is None
    assert journal_path is not None
    assert [json.loads(r.body)["batch_id"] for r in journal.read(journal_path)] == [
        "b0",
        "b1",
        "b2",
    ]


def test_offline_everything_is_journaled_and_nothing_sent(capture: Any, tmp_path: Path) -> None:
    delivery = _delivery(capture.url, tmp_path, offline=True)
    delivery.put(_request(0))
    delivery.deliver()
    delivery.heartbeat()
    assert delivery.due(time.monotonic()) is None and delivery.outbox_bytes == 0
    journal_path, _ = delivery.finish(time.monotonic() + 1.0)
    delivery.close()
    assert capture.captured.snapshot() == [] and journal_path is not None


def test_a_rank_waits_out_no_such_run_until_it_exists(capture: Any, tmp_path: Path) -> None:
    created: list[bool] = []

    def status(method: str, path: str, body: dict[str, Any]) -> int:
        return 200 if created else 404

    capture.captured.status = status
    config = AgentConfig.from_env({}, url=capture.url, journal_dir=tmp_path)
    delivery = Delivery(config, RUN, Incidents(), journal_stem=f"{RUN}.rank1", awaits_run=True)
    delivery.put(_request(0))
    delivery.deliver()
    assert delivery.failures == 1 and delivery.dead_lettered == 0 and delivery.backlog
    created.append(True)  # rank 0 created the run
    _deliver_until(delivery, lambda: not delivery.backlog)
    assert _numbers(capture.captured.snapshot()) == [0] and delivery.dead_lettered == 0
    delivery.close()


def test_a_heartbeat_goes_only_after_a_quiet_spell(capture: Any, tmp_path: Path) -> None:
    delivery = _delivery(capture.url, tmp_path, heartbeat_secs=0.2)
    delivery.heartbeat()
    assert delivery.heartbeats_sent == 0  # the run was never accepted: nothing to keep alive
    delivery.put(_request(0))
    delivery.deliver()
    delivery.heartbeat()
    assert delivery.heartbeats_sent == 0  # just in contact
    time.sleep(0.25)
    delivery.heartbeat()
    assert (delivery.heartbeats_sent, delivery.heartbeats) == (1, 1)
    assert capture.captured.snapshot()[-1][1] == f"/api/v1/runs/{RUN}/heartbeat"
    delivery.close()
