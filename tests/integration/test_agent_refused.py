"""The agent against a real server behind a real proxy process that refuses (4xx) and fails
(429, 5xx) its requests: refusals are set aside with one warning, failures are waited out, the
outbox spills to disk, ``finish`` completes, and the server ends up holding every point."""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import trickscope
from tests.helpers import LiveServer, free_port, wait_until
from trickscope.journal import read, replay

STEPS = 150
SPECIAL = {7: math.nan, 8: math.inf, 9: -math.inf}


def _value(step: int) -> float:
    return SPECIAL.get(step, step * 0.5)


def _token(value: float) -> object:
    if math.isnan(value):
        return "NaN"
    return value if math.isfinite(value) else ("Infinity" if value > 0 else "-Infinity")


class Proxy:
    """``refusing_proxy`` as a process of its own."""

    def __init__(self, upstream: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.refusing_proxy", "--upstream", upstream,
             "--port", str(self.port)],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        assert self.process.stdout is not None and self.process.stdout.readline() == "ready\n"

    def control(self, what: str, body: object) -> list[list[object]]:
        request = urllib.request.Request(
            f"{self.url}/_proxy/{what}",
            data=json.dumps(body).encode(),
            method="PUT",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


@pytest.fixture
def proxy(live_server: LiveServer) -> Iterator[Proxy]:
    started = Proxy(live_server.url)
    yield started
    started.stop()


def _outage_answers(proxy: Proxy) -> int:
    """Requests answered 503 after the planned answers ran out."""
    log = [entry for entry in proxy.control("plan", []) if not entry[4]]
    return sum(1 for entry in log[5:] if entry[3] == 503)


def _points(server: LiveServer, run_id: str) -> dict[int, object]:
    url = f"{server.url}/api/v1/runs/{run_id}/points?name=loss&points=100000"
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.loads(response.read())
    return dict(zip(body["step"], body["value"], strict=True))


def test_refused_and_failed_requests_lose_nothing_and_finish_completes(
    live_server: LiveServer, proxy: Proxy, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The first point batch is refused, the next fails three times (each a retry of the same
    # batch) and is then refused too.
    proxy.control("plan", [422, 429, 503, 500, 413])
    journal_dir = tmp_path / "journal"
    with caplog.at_level(logging.WARNING, logger="trickscope"):
        run = trickscope.init(
            project="refused",
            url=proxy.url,
            journal_dir=journal_dir,
            flush_secs=0.02,
            max_buffer_bytes=4096,
        )
        for step in range(100):
            run.log({"loss": _value(step)}, step=step)
            time.sleep(0.005)
        sender = run.sender
        assert sender is not None
        wait_until(lambda: sender.dead_lettered == 2, timeout=60, what="both refusals set aside")
        # An outage: every request fails while more is logged, and the outbox spills to disk.
        proxy.control("outage", {"status": 503})
        journal = journal_dir / f"{run.id}.jsonl"
        for step in range(100, STEPS):
            run.log({"loss": _value(step)}, step=step)
        wait_until(lambda: journal.exists() and _outage_answers(proxy) >= 2, timeout=60,
                   what="a spill to the journal and failed attempts")  # fmt: skip
        proxy.control("outage", {"status": None})
        run.finish(timeout=60)

    assert (sender.dead_lettered, sender.journal_path) == (2, None)  # the journal was delivered
    assert run.incidents.errors == 0, run.incidents.by_kind
    refused = [r for r in caplog.records if "was refused" in r.getMessage()]
    assert len(refused) == 1 and "trickscope sync" in refused[0].getMessage()

    log = proxy.control("plan", [])
    points = [(status, batch, forwarded) for _, path, batch, status, forwarded in log
              if str(path).endswith("/points")]  # fmt: skip
    assert [status for status, _, forwarded in points if not forwarded][:5] == [
        422, 429, 503, 500, 413
    ]  # fmt: skip
    retried = points[1][1]
    assert [b for _, b, _ in points[1:5]] == [retried] * 4  # the same batch until it was refused
    finishes = [entry for entry in log if str(entry[1]).endswith("/finish")]
    assert finishes and finishes[-1][3] == 200

    # What was refused waits in the dead-letter file; everything else reached the server.
    dead = sender.dead_letter_path
    assert dead is not None and len(list(read(dead))) == 2
    before = _points(live_server, run.id)
    assert 0 < len(before) < STEPS
    assert replay(dead, live_server.url) == 2  # what `trickscope sync` does with the file
    stored = _points(live_server, run.id)
    expected = {step: _token(_value(step)) for step in range(STEPS)}
    assert stored == expected
