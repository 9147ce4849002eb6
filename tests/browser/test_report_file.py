"""The HTML report opens from a file: charts drawn, no network, untrusted text as text."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_report import HOSTILE, make_run

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]


def test_report_opens_offline_with_its_charts(dashboard, client, live_server, tmp_path: Path):
    run_id = make_run(client)
    output = tmp_path / "run.html"
    subprocess.run(
        [sys.executable, "-m", "trickscope_cli", "report", run_id, "-o", str(output)]
        + ["--url", live_server.url],
        check=True,
        timeout=60,
    )
    page = dashboard.page
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(output.as_uri())
    page.wait_for_function("() => document.body.dataset.loaded === 'true'")
    assert page.text_content("#run-name") == HOSTILE
    assert page.locator("img").count() == 0
    assert page.text_content("#config th") == "<!--x"
    assert "</SCRIPT>" in page.text_content("#config")
    # Charts: families loss and lr, plus the grad_norm heatmap.
    assert page.get_attribute("body", "data-charts") == "3"
    assert page.locator(".js-plotly-plot").count() == 3
    points = page.eval_on_selector_all(".chart", "ds => ds.map(d => d.dataset.points)")
    assert points == ["33", "30", "60"]
    legend = page.text_content("#chart-0 .legend")
    assert "loss/<b>odd</b>" in legend
    assert [url for url in requests if not url.startswith("file://")] == []
    assert not dashboard.dialogs
    dashboard.assert_clean()
