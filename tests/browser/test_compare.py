"""The runs page's history tools (filters, sort, grouping, selection) and the compare page."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from tests.browser.test_run_page import HOSTILE, steps, wait_chart
from tests.browser.test_runs_page import wait_rows

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]


def names(dashboard) -> list[str]:
    return dashboard.page.eval_on_selector_all(
        "#runs-body tr:not(.group-row)",
        "trs => trs.map(tr => tr.querySelector('td[data-col=name] a').textContent)",
    )


def make_history(client) -> dict[str, str]:
    ids = {}
    for name, project, opt, lr, loss, tags in (
        ("alpha", "vision", "sgd", 0.1, 0.9, ["baseline"]),
        ("beta", "vision", "adamw", 0.001, 0.3, ["baseline", "ema"]),
        ("gamma", "nlp", "adamw", 0.0003, 0.5, ["ema"]),
    ):
        run_id = client.create_run(
            project=project, name=name, config={"optimizer": {"name": opt}, "lr": lr}, tags=tags
        )
        client.post_points(run_id, {"loss/train": ([0, 1], [2.0, loss])})
        ids[name] = run_id
    return ids


def test_runs_page_filters_by_tag_config_and_metric(dashboard, client):
    make_history(client)
    dashboard.goto("/")
    wait_rows(dashboard, 3)
    page = dashboard.page
    page.fill("#filter-tag", "ema")
    wait_rows(dashboard, 2)
    assert sorted(names(dashboard)) == ["beta", "gamma"]
    page.fill("#filter-config", "optimizer.name:adamw")
    page.fill("#filter-metric", "loss/train<0.4")
    wait_rows(dashboard, 1)
    assert names(dashboard) == ["beta"]
    assert "metric=loss%2Ftrain%3C0.4" in page.url
    page.fill("#filter-tag", "")
    page.fill("#filter-metric", "")
    wait_rows(dashboard, 2)
    assert sorted(names(dashboard)) == ["beta", "gamma"]
    dashboard.assert_clean()


def test_runs_page_sorts_by_config_and_metric_and_groups_by_project(dashboard, client):
    make_history(client)
    dashboard.goto("/")
    wait_rows(dashboard, 3)
    page = dashboard.page
    page.wait_for_function(
        "() => [...document.querySelectorAll('#sort-key option')]"
        ".some(o => o.value === 'config:lr')"
    )
    page.select_option("#sort-key", "config:lr")
    page.wait_for_function("() => !document.getElementById('sort-col').hidden")
    page.click("#sort-dir")  # ascending
    page.wait_for_function(
        "() => [...document.querySelectorAll('#runs-body tr')].map(tr => tr.querySelector('a').textContent)"
        ".join() === 'gamma,beta,alpha'"
    )
    assert page.text_content("#sort-col") == "lr"
    page.select_option("#sort-key", "metric:loss/train")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#runs-body tr')].map(tr => tr.querySelector('a').textContent)"
        ".join() === 'beta,gamma,alpha'"
    )
    page.click("button.th-sort[data-sort='name']")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#runs-body tr')].map(tr => tr.querySelector('a').textContent)"
        ".join() === 'alpha,beta,gamma'"
    )
    page.check("#group-projects")
    page.wait_for_function(
        "() => document.querySelectorAll('#runs-body tr.group-row').length === 2"
    )
    groups = page.eval_on_selector_all(
        "#runs-body tr.group-row", "trs => trs.map(tr => tr.textContent)"
    )
    assert groups == ["nlp (1)", "vision (2)"]
    assert names(dashboard) == ["gamma", "alpha", "beta"]
    dashboard.assert_clean()


def _compare_served(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/compare", timeout=5) as response:
            return response.status == 200
    except urllib.error.HTTPError:
        return False


def test_compare_overlays_selected_runs_with_config_differences(dashboard, client, live_server):
    if not _compare_served(live_server.url):
        pytest.skip("the server does not serve /compare yet")
    ids = make_history(client)
    hostile = client.create_run(
        project="vision", name=HOSTILE, config={"optimizer": {"name": "<b>x</b>"}, "lr": 0.1}
    )
    client.post_points(hostile, {"loss/train": (steps(3), [3.0, 2.0, 1.0])})
    client.post_points(ids["alpha"], {"only/alpha": ([0], [1.0])})
    dashboard.goto("/")
    wait_rows(dashboard, 4)
    page = dashboard.page
    assert page.is_disabled("#compare-button")
    page.check(f"input.select-run[data-run-id='{ids['alpha']}']")
    page.check(f"input.select-run[data-run-id='{hostile}']")
    page.click("#compare-button")
    page.wait_for_url("**/compare?runs=*")
    page.wait_for_function("() => document.body.dataset.loaded === 'true'")

    chart = wait_chart(dashboard, "chart-compare", 5)
    assert chart["series"] == "2"
    legend = page.text_content("#chart-compare .legend")
    assert "alpha" in legend
    assert HOSTILE in legend
    options = page.eval_on_selector_all("#compare-series option", "os => os.map(o => o.value)")
    assert options == ["loss/train", "only/alpha"], "the union of the runs' series"
    assert page.input_value("#compare-series") == "loss/train"
    diff = page.eval_on_selector_all(
        "#config-diff tbody tr",
        "trs => trs.map(tr => [...tr.cells].map(c => c.textContent))",
    )
    # lr is equal (0.1) and hidden; the optimizer differs, shown as text.
    assert diff == [["optimizer.name", "sgd", "<b>x</b>"]]
    headers = page.eval_on_selector_all(
        "#config-diff thead th", "ths => ths.map(t => t.textContent)"
    )
    assert HOSTILE in headers[2]
    assert page.locator("img, main b").count() == 0

    page.select_option("#compare-series", "only/alpha")
    page.wait_for_function(
        "() => document.getElementById('chart-compare').dataset.name === 'only/alpha'"
    )
    assert wait_chart(dashboard, "chart-compare", 1)["series"] == "2"
    assert "name=only%2Falpha" in page.url
    assert not dashboard.dialogs
    dashboard.assert_clean()


def test_compare_zoom_rereads_every_run(dashboard, client, live_server):
    if not _compare_served(live_server.url):
        pytest.skip("the server does not serve /compare yet")
    a = client.create_run(project="p", name="a")
    b = client.create_run(project="p", name="b")
    n = 6000
    client.post_points(a, {"loss": (steps(n), [float(s % 97) for s in range(n)])})
    client.post_points(b, {"loss": (steps(n), [float(s % 89) for s in range(n)])})
    dashboard.goto(f"/compare?runs={a},{b}")
    dashboard.page.wait_for_function("() => document.body.dataset.loaded === 'true'")
    page = dashboard.page
    page.wait_for_function("() => +document.getElementById('chart-compare').dataset.points > 0")
    page.evaluate("() => Plotly.relayout('chart-compare', {'xaxis.range': [3000, 3200]})")
    page.wait_for_function(
        "() => document.getElementById('chart-compare').dataset.window === '3000,3200'"
    )
    windows = page.eval_on_selector(
        "#chart-compare",
        "div => div.data.slice(1).map(t => t.x.filter(x => x >= 3000 && x <= 3200).length)",
    )
    assert windows == [201, 201]
    dashboard.assert_clean()
