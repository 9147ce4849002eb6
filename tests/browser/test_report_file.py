"""The HTML report opens from a file: charts drawn, no network, untrusted text as text."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_report import HOSTILE, make_run, report

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]


def test_report_opens_offline_with_its_charts(dashboard, client, live_server, tmp_path: Path):
    run_id = make_run(client)
    output = tmp_path / "run.html"
    assert report(live_server.url, run_id, output).returncode == 0
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


def test_a_distributed_runs_report_draws_one_chart_per_rank_quantity(
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
    output = tmp_path / "ddp.html"
    assert report(live_server.url, run_id, output).returncode == 0
    page = dashboard.page
    page.goto(output.as_uri())
    page.wait_for_function("() => document.body.dataset.loaded === 'true'")
    # The chart cards' headings (the Health card has its own, first).
    titles = page.eval_on_selector_all(".card:not(.health) h2", "hs => hs.map(h => h.textContent)")
    assert titles == ["per rank: grad_norm", "per rank: loss/train", "per rank: step_time"]
    points = page.eval_on_selector_all(".chart", "ds => ds.map(d => d.dataset.points)")
    assert points == ["24", "8", "24"]
    system = page.eval_on_selector_all("#system th", "ths => ths.map(th => th.textContent)")
    assert ["rank 0", "rank 1", "rank 2"] == [name for name in system if name.startswith("rank")]
    dashboard.assert_clean()
