"""Server down: memory stays bounded, the rest spills to the journal, replay delivers it."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import trickscope
from trickscope import journal
from trickscope.journal import Journal, Request
from trickscope.sender import FLUSH_POINTS

UNREACHABLE = "http://127.0.0.1:9"  # the discard port: connections are refused at once


def test_unreachable_server_keeps_memory_bounded_and_finish_prompt(
    settings: dict[str, Any],
) -> None:
    cap = 32 * 1024
    model = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    # finish(timeout=1.0) must override a finish_timeout that would keep it a minute.
    settings = {**settings, "max_buffer_bytes": cap, "flush_secs": 0.01, "finish_timeout": 60.0}
    run = trickscope.init(project="p", url=UNREACHABLE, queue_size=100_000, **settings)
    run.watch(model, optimizer, every=1, hist_every=1)  # histograms buffer too
    for step in range(400):
        optimizer.zero_grad()
        model(torch.randn(4, 32)).pow(2).mean().backward()
        optimizer.step()
        run.log({"loss": torch.tensor(float(step))})
    started = time.monotonic()
    run.finish(timeout=1.0)
    # A loaded machine may take seconds over the timeout; never the minute of finish_timeout.
    assert time.monotonic() - started < 20.0
    sender = run.sender
    assert sender is not None
    assert run.incidents.errors == 0, run.incidents.by_kind
    # The outbox never holds more than the cap plus one request, and a request is bounded by
    # the flush size (how many steps one holds depends on how far the sender thread lags).
    assert sender.peak_buffer_bytes <= cap + sender.peak_request_bytes
    assert sender.peak_request_bytes < FLUSH_POINTS * 64
    assert sender.journal_path is not None and sender.journal_path.stat().st_size > cap
    requests = list(journal.read(sender.journal_path))
    assert requests[0].method == "PUT" and requests[-1].path.endswith("/finish")


def test_replay_uploads_a_journal_with_identical_content(
    capture: Any, settings: dict[str, Any]
) -> None:
    run = trickscope.init(project="p", url=UNREACHABLE, offline=True, **settings)
    for step in range(50):
        run.log({"loss": torch.tensor(float(step)), "lr": 0.1}, step=step)
    run.finish()
    assert run.sender is not None and run.sender.journal_path is not None
    path = run.sender.journal_path
    sent = trickscope.replay(path, capture.url)
    received = capture.captured.snapshot()
    written = list(journal.read(path))
    assert sent == len(written) == len(received) >= 3
    import json

    for request, (method, url_path, body) in zip(written, received, strict=True):
        assert (request.method, request.path, json.loads(request.body)) == (method, url_path, body)
    points = capture.captured.points()
    assert points["loss"] == {step: float(step) for step in range(50)}


def test_journal_is_deleted_once_delivered(tmp_path: Path) -> None:
    book = Journal(tmp_path / "r.jsonl")
    book.append(Request("PUT", "/a", b'{"x":1}'))
    request, size = book.peek()
    assert request == Request("PUT", "/a", b'{"x":1}')
    book.advance(size)
    assert not book.pending
    assert book.close() is None and not (tmp_path / "r.jsonl").exists()


def test_server_coming_back_receives_the_spilled_journal_first(
    capture: Any, settings: dict[str, Any]
) -> None:
    sender_settings = {**settings, "max_buffer_bytes": 1}
    run = trickscope.init(project="p", url=capture.url, **sender_settings)
    for step in range(20):
        run.log({"m": float(step)}, step=step)
    run.finish()
    paths = [path for _, path, _ in capture.captured.snapshot()]
    assert paths[0] == f"/api/v1/runs/{run.id}" and paths[-1].endswith("/finish")
    assert capture.captured.points()["m"] == {step: float(step) for step in range(20)}
    assert run.sender is not None and run.sender.journal_path is None  # delivered, removed


def _thread_cpu_seconds(native_id: int) -> float:
    fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_an_idle_sender_sleeps_offline_and_with_the_server_down(settings: dict[str, Any]) -> None:
    """With a journal to deliver (offline, or a server down) the sender waits, never spins."""
    for extra in ({"offline": True}, {}):
        run = trickscope.init(project="p", url=UNREACHABLE, **settings, **extra)
        run.log({"loss": 1.0}, step=0)
        sender = run.sender
        assert sender is not None
        time.sleep(0.3)  # the point is flushed and journaled (or failed to send)
        thread = sender._thread
        assert thread.native_id is not None
        before = _thread_cpu_seconds(thread.native_id)
        time.sleep(1.0)
        used = _thread_cpu_seconds(thread.native_id) - before
        run.finish(timeout=0.5)
        assert used < 0.2, f"sender used {used:.2f} s of CPU in 1 s idle ({extra})"
