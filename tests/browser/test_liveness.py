"""Runs that went silent: the crashed badge on the runs page and the run page, and its way back.

The server here allows runs 2 s of silence, so the tests see a run go crashed without waiting
minutes; the pages learn it the way they learn any status (the list's refresh, the run's stream).
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import LiveServer, start_server, stop_server

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[LiveServer]:
    """A real server whose running runs read crashed after 2 s without a request."""
    server = start_server(
        f"sqlite:///{tmp_path / 'trickscope.db'}",
        tmp_path / "server.log",
        env={"TRICKSCOPE_LIVENESS_GRACE_SECONDS": "2"},
    )
    yield server
    stop_server(server)


def heartbeat(server: LiveServer, run_id: str) -> None:
    request = urllib.request.Request(
        f"{server.url}/api/v1/runs/{run_id}/heartbeat",
        data=b"{}",
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 204


def badge_of_row(dashboard, run_id: str) -> dict[str, str | None]:
    return dashboard.page.eval_on_selector(
        f"#runs-body tr[data-run-id='{run_id}'] .badge",
        "b => ({text: b.textContent, cls: b.className, title: b.getAttribute('title'),"
        " color: getComputedStyle(b).color})",
    )


def wait_row_status(dashboard, run_id: str, status: str) -> None:
    dashboard.page.wait_for_function(
        """([id, s]) => document.querySelector(`#runs-body tr[data-run-id='${id}'] .badge`)
            ?.textContent === s""",
        arg=[run_id, status],
    )


def test_runs_page_shows_a_silent_run_crashed_and_running_again(
    dashboard, client, live_server
) -> None:
    silent = client.create_run(project="vision", name="silent")
    done = client.create_run(project="vision", name="done")
    client.finish(done)

    dashboard.goto("/")
    wait_row_status(dashboard, silent, "crashed")  # the list refreshes itself
    badge = badge_of_row(dashboard, silent)
    assert badge["cls"] == "badge badge-crashed"
    assert badge["title"] and badge["title"].startswith("No request from the training process")
    finished = badge_of_row(dashboard, done)
    assert finished["text"] == "finished" and finished["title"] is None
    assert badge["color"] != finished["color"]  # its own style, not the finished one

    page = dashboard.page
    page.select_option("#filter-status", "crashed")
    page.wait_for_function("() => document.querySelectorAll('#runs-body tr').length === 1")
    assert page.get_attribute("#runs-body tr", "data-run-id") == silent

    heartbeat(live_server, silent)
    page.select_option("#filter-status", "")
    wait_row_status(dashboard, silent, "running")
    assert badge_of_row(dashboard, silent)["title"] is None
    dashboard.assert_clean()


def test_run_page_shows_crashed_keeps_listening_and_comes_back(
    dashboard, client, live_server
) -> None:
    run_id = client.create_run(project="vision", name="silent")
    client.post_points(run_id, {"loss/train": ([0, 1], [1.0, 0.5])})
    page = dashboard.page
    dashboard.goto(f"/runs/{run_id}")
    page.wait_for_function("() => document.body.dataset.loaded === 'true'")
    page.wait_for_function("() => document.getElementById('run-status').textContent === 'crashed'")
    assert page.get_attribute("#run-status", "class") == "badge badge-crashed"
    assert (page.get_attribute("#run-status", "title") or "").startswith("No request")
    # Silent, not ended: the stream stays open for a late request.
    page.wait_for_function("() => document.getElementById('live-state').dataset.state === 'live'")

    client.post_points(run_id, {"loss/train": ([2], [0.25])})  # a late batch
    page.wait_for_function("() => document.getElementById('run-status').textContent === 'running'")
    assert page.get_attribute("#run-status", "title") is None

    # The process itself says it crashed (right after a heartbeat, so its stream still sees a
    # running run change): the run has ended.
    heartbeat(live_server, run_id)
    client.finish(run_id, status="crashed")
    page.wait_for_function("() => document.getElementById('live-state').dataset.state === 'ended'")
    assert page.text_content("#run-status") == "crashed"
    assert page.get_attribute("#run-status", "title") is None
    assert page.text_content("#run-ended") != "\u2014"
    dashboard.assert_clean()
