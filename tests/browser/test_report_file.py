"""The HTML report opens from a file with the network blocked and shows what the run page shows:
the findings, every chart with the same points, the histograms; untrusted text stays text."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser.test_run_page import wait_chart, wait_loaded
from tests.integration.test_report import HOSTILE, make_run, report

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

# Every chart on the page with what it drew; hidden sections' charts are left out.
CHARTS = """() => [...document.querySelectorAll('.chart')]
    .filter(d => !d.closest('[hidden]'))
    .map(d => [d.id, d.dataset.points])"""


def wait_layer_charts(dashboard) -> None:
    """The first layer's charts and histograms draw after the page says it loaded."""
    wait_chart(dashboard, "chart-layer-grad", 30)
    wait_chart(dashboard, "chart-update-ratio", 30)
    wait_chart(dashboard, "chart-hist", 3)


def open_offline(dashboard, path: Path) -> list[str]:
    """Open the file with every request other than the file itself (and its blobs) refused."""
    page = dashboard.page
    refused: list[str] = []

    def route(request_route) -> None:
        url = request_route.request.url
        if url.startswith(("file://", "blob:", "data:")):
            request_route.continue_()
        else:
            refused.append(url)
            request_route.abort()

    page.route("**/*", route)
    page.goto(path.as_uri())
    wait_loaded(dashboard)
    return refused


def test_report_opens_offline_and_shows_what_the_page_shows(
    dashboard, client, live_server, tmp_path: Path
):
    run_id = make_run(client)
    output = tmp_path / "run.html"
    assert report(live_server.url, run_id, output).returncode == 0
    page = dashboard.page

    # The live page first: the charts it draws and the findings it lists.
    dashboard.goto(f"/runs/{run_id}")
    wait_loaded(dashboard)
    wait_layer_charts(dashboard)
    page.wait_for_function("() => document.getElementById('health').dataset.state === 'findings'")
    on_page = page.evaluate(CHARTS)
    findings = page.eval_on_selector_all("#health-list > li", "ls => ls.map(l => l.dataset.check)")

    refused = open_offline(dashboard, output)
    wait_layer_charts(dashboard)
    page.wait_for_function("() => document.getElementById('health').dataset.state === 'findings'")
    assert refused == []
    assert page.evaluate(CHARTS) == on_page
    ids = {chart_id for chart_id, _ in on_page}
    assert {"chart-loss", "chart-lr", "chart-epsdom", "chart-heatmap", "chart-hist"} <= ids
    assert dict(on_page)["chart-hist"] == "3"
    assert (
        page.eval_on_selector_all("#health-list > li", "ls => ls.map(l => l.dataset.check)")
        == findings
    )
    assert "nonfinite-loss" in findings
    assert page.text_content("#live-state") == "offline copy"
    # The band of the update-ratio rule came with the health report.
    band = page.eval_on_selector("#chart-update-ratio", "div => div.layout.shapes[0]")
    assert (band["y0"], band["y1"]) == (1e-5, 1e-1)
    # Untrusted text is text.
    assert page.text_content("#run-name") == HOSTILE
    assert page.locator("img").count() == 0
    assert page.text_content("#config-table th") == "<!--x"
    assert "</SCRIPT>" in page.text_content("#config-table")
    assert "loss/<b>odd</b>" in page.text_content("#chart-loss .legend")
    # A zoom re-reads the window from the inline data.
    page.evaluate("() => Plotly.relayout('chart-loss', {'xaxis.range': [5, 10]})")
    page.wait_for_function(
        "() => document.getElementById('chart-loss').dataset.windowReads === '1'"
    )
    assert not dashboard.dialogs
    dashboard.assert_clean()


def test_a_distributed_runs_report_has_the_per_rank_panels(
    dashboard, client, live_server, tmp_path: Path
):
    run_id = client.create_run(project="ddp", name="job")
    series = {}
    for rank in range(3):
        client.declare_rank(run_id, rank, {"hostname": f"node-{rank}", "pid": 10 + rank})
        series[f"rank/{rank}/step_time"] = (list(range(8)), [0.2] * 8)
        series[f"rank/{rank}/grad_norm"] = (list(range(8)), [1.0] * 8)
    series["rank/1/loss/train"] = (list(range(8)), [0.5] * 8)
    client.post_points(run_id, series)
    client.finish(run_id)
    output = tmp_path / "ddp.html"
    assert report(live_server.url, run_id, output).returncode == 0
    assert open_offline(dashboard, output) == []
    page = dashboard.page
    panels = page.eval_on_selector_all(
        "#ranks-panels .chart", "ds => ds.map(d => [d.id, d.dataset.points])"
    )
    assert panels == [["chart-ranktime", "24"], ["chart-ranknorm", "24"], ["chart-ranklog", "8"]]
    system = page.eval_on_selector_all("#system-table th", "ths => ths.map(th => th.textContent)")
    assert ["rank 0", "rank 1", "rank 2"] == [name for name in system if name.startswith("rank")]
    dashboard.assert_clean()
