"""The runs page's history tools (filters, sort, grouping, selection) and the compare page."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser.conftest import Client
from tests.browser.test_cross_origin import TOKEN
from tests.browser.test_run_page import HOSTILE, steps
from tests.browser.test_runs_page import wait_rows
from tests.helpers import LiveServer, start_server, stop_server

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
    page.wait_for_function("() => document.getElementById('sort-col')?.hidden === false")
    page.click("#sort-dir")  # ascending
    page.wait_for_function(
        "() => [...document.querySelectorAll('#runs-body tr')]"
        ".map(tr => tr.querySelector('a').textContent)"
        ".join() === 'gamma,beta,alpha'"
    )
    assert page.text_content("#sort-col") == "lr"
    page.select_option("#sort-key", "metric:loss/train")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#runs-body tr')]"
        ".map(tr => tr.querySelector('a').textContent)"
        ".join() === 'beta,gamma,alpha'"
    )
    page.click("button.th-sort[data-sort='name']")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#runs-body tr')]"
        ".map(tr => tr.querySelector('a').textContent)"
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


def require_compare_page(url: str) -> None:
    """Skip where the server serves no /compare page yet; under CI=true that fails instead."""
    try:
        with urllib.request.urlopen(f"{url}/compare", timeout=5) as response:
            if response.status == 200:
                return
            problem = f"GET /compare answered {response.status}"
    except urllib.error.HTTPError as exc:
        problem = f"GET /compare answered {exc.code}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{problem}: the compare page must be served")
    pytest.skip(f"{problem}: the server does not serve /compare yet")


def panels(dashboard) -> dict[str, dict[str, object]]:
    """Every panel of the compare grid: its runs drawn, traces and smoothed line per run."""
    return dashboard.page.eval_on_selector_all(
        "#panels .compare-chart",
        """divs => Object.fromEntries(divs.map(div => [div.dataset.name, {
            series: +div.dataset.series,
            points: +div.dataset.points,
            traces: (div.data || []).filter(t => !t.meta.nonfinite).length,
            nonfinite: (div.data || []).filter(t => t.meta.nonfinite).map(t => t.x),
            smoothed: (div.data || []).filter(t => !t.meta.raw).map(t => t.y),
            raw: (div.data || []).filter(t => t.meta.raw && !t.meta.nonfinite).map(t => t.y),
            colors: (div.data || []).filter(t => !t.meta.raw).map(t => t.line.color),
        }]))""",
    )


def wait_panels(dashboard, count: int) -> dict[str, dict[str, object]]:
    dashboard.page.wait_for_function("() => document.body.dataset.loaded === 'true'")
    dashboard.page.wait_for_function(
        """n => {
            const divs = [...document.querySelectorAll('#panels .compare-chart')];
            return divs.length === n && divs.every(d => d.data && d.dataset.series);
        }""",
        arg=count,
    )
    return panels(dashboard)


def ema(values: list[float], weight: float) -> list[float]:
    """TensorBoard's debiased EMA, as the page computes it."""
    out, last = [], 0.0
    for i, value in enumerate(values, start=1):
        last = last * weight + (1 - weight) * value
        out.append(last / (1 - weight**i))
    return out


def test_filter_select_all_then_compare_shows_the_common_charts(dashboard, client, live_server):
    require_compare_page(live_server.url)
    ids = make_history(client)
    for name, run_id in ids.items():
        shift = 0.1 if name == "gamma" else 0.0
        client.post_points(
            run_id,
            {
                "eval/acc": ([0, 1], [0.5 + shift, 0.7 + shift]),
                "eval/runtime": ([0, 1], [1.5, 1.6]),  # bookkeeping, not a default chart
                "lr/group0": ([0, 1], [0.01, 0.02]),
                "grad_norm/total": ([0, 1], [3.0, float("nan") if shift else 2.0]),
                "grad_norm/fc.weight": ([0, 1], [1.0, 1.0]),
            },
        )
        client.declare_layers(run_id, ["fc.weight"])
    dashboard.goto("/")
    wait_rows(dashboard, 3)
    page = dashboard.page
    page.fill("#filter-config", "optimizer.name:adamw")
    wait_rows(dashboard, 2)
    assert page.text_content("#select-all") == "Select all matching (2)"
    page.click("#select-all")
    assert page.is_checked(f"input.select-run[data-run-id='{ids['beta']}']")
    page.click("#compare-button")
    page.wait_for_url("**/compare?runs=*")

    grid = wait_panels(dashboard, 4)
    assert list(grid) == ["loss/train", "eval/acc", "lr/group0", "grad_norm/total"]
    for name, panel in grid.items():
        assert panel["series"] == 2, name
        assert panel["traces"] == 4, f"{name}: a smoothed and a faint raw line per run"
    # gamma's NaN is marked at its step, not left as a silent gap.
    assert grid["grad_norm/total"]["nonfinite"] == [[1]]
    assert grid["loss/train"]["nonfinite"] == []
    # One colour per run, the same on every panel.
    assert len({tuple(panel["colors"]) for panel in grid.values()}) == 1
    assert len(set(grid["loss/train"]["colors"])) == 2
    legend = page.text_content("#panels .compare-chart .legend")
    assert "beta" in legend and "gamma" in legend
    # The diff table holds only the keys that differ (lr; the optimizer is adamw in both).
    diff = page.eval_on_selector_all(
        "#config-diff tbody tr", "trs => trs.map(tr => [...tr.cells].map(c => c.textContent))"
    )
    assert [row[0] for row in diff] == ["lr"]
    assert sorted(diff[0][1:]) == ["0.0003", "0.001"]
    assert page.eval_on_selector(".compare-top", "e => getComputedStyle(e).position") == "sticky"
    dashboard.assert_clean()


def test_smoothing_redraws_every_panel_with_the_raw_line_behind(dashboard, client, live_server):
    require_compare_page(live_server.url)
    values = [4.0, 1.0, 3.0, 0.5, 2.0, 0.25]
    a = client.create_run(name="a")
    b = client.create_run(name="b")
    for run_id in (a, b):
        client.post_points(run_id, {"loss": (steps(6), values), "eval/acc": (steps(6), values)})
    dashboard.goto(f"/compare?runs={a},{b}&smooth=0")
    grid = wait_panels(dashboard, 2)
    assert grid["loss"]["smoothed"][0] == values, "no smoothing: the raw values"
    page = dashboard.page
    page.eval_on_selector(
        "#smoothing", "s => { s.value = '0.9'; s.dispatchEvent(new Event('input')); }"
    )
    page.wait_for_function(
        "() => [...document.querySelectorAll('.compare-chart')]"
        ".every(d => d.dataset.smoothing === '0.9')"
    )
    grid = panels(dashboard)
    for panel in grid.values():
        for drawn in panel["smoothed"]:
            assert drawn == pytest.approx(ema(values, 0.9))
        assert panel["raw"] == [values, values]
    assert page.text_content("#smoothing-value") == "0.90"
    assert "smooth=0.9" in page.url
    dashboard.assert_clean()


def test_series_search_adds_a_panel_and_untrusted_names_stay_text(dashboard, client, live_server):
    require_compare_page(live_server.url)
    ids = make_history(client)
    hostile = client.create_run(
        project="vision", name=HOSTILE, config={"optimizer": {"name": "<b>x</b>"}, "lr": 0.1}
    )
    client.post_points(hostile, {"loss/train": (steps(3), [3.0, 2.0, 1.0])})
    client.post_points(ids["alpha"], {"only/alpha": ([0], [1.0])})
    client.post_points(ids["alpha"], {f"stat{i}/x": ([0], [1.0]) for i in range(40)})
    dashboard.goto(f"/compare?runs={ids['alpha']},{hostile}")
    assert list(wait_panels(dashboard, 1)) == ["loss/train"]
    page = dashboard.page
    page.fill("#series-search", "ONLY")
    hits = page.eval_on_selector_all("#series-hits button", "bs => bs.map(b => b.textContent)")
    assert hits == ["only/alpha"]
    page.press("#series-search", "Enter")
    grid = wait_panels(dashboard, 2)
    assert list(grid) == ["only/alpha", "loss/train"], "the new panel comes first"
    assert grid["only/alpha"]["series"] == 1 and grid["only/alpha"]["traces"] == 4
    assert "panel=only%2Falpha" in page.url
    page.fill("#series-search", "stat")
    assert page.locator("#series-hits button").count() == 12, "a short list, not 40 entries"
    page.press("#series-search", "Escape")
    assert page.locator("#series-hits").is_hidden()

    diff = page.eval_on_selector_all(
        "#config-diff tbody tr", "trs => trs.map(tr => [...tr.cells].map(c => c.textContent))"
    )
    assert diff == [["optimizer.name", "sgd", "<b>x</b>"]]  # lr is 0.1 in both
    headers = page.eval_on_selector_all(
        "#config-diff thead th", "ths => ths.map(t => t.textContent)"
    )
    assert HOSTILE in headers[2]
    assert HOSTILE in page.text_content("section.compare-panel[data-name='loss/train'] .legend")
    assert page.locator("img, main b").count() == 0
    page.click(
        "section.compare-panel[data-name='only/alpha'] button[aria-label='remove only/alpha']"
    )
    wait_panels(dashboard, 1)
    assert "only" not in page.url
    assert not dashboard.dialogs
    dashboard.assert_clean()


def test_compare_zoom_rereads_every_run(dashboard, client, live_server):
    require_compare_page(live_server.url)
    a = client.create_run(project="p", name="a")
    b = client.create_run(project="p", name="b")
    n = 6000
    client.post_points(a, {"loss": (steps(n), [float(s % 97) for s in range(n)])})
    client.post_points(b, {"loss": (steps(n), [float(s % 89) for s in range(n)])})
    dashboard.goto(f"/compare?runs={a},{b}")
    wait_panels(dashboard, 1)
    page = dashboard.page
    page.evaluate(
        "() => Plotly.relayout(document.querySelector('.compare-chart'), "
        "{'xaxis.range': [3000, 3200]})"
    )
    page.wait_for_function(
        "() => document.querySelector('.compare-chart').dataset.window === '3000,3200'"
    )
    windows = page.eval_on_selector(
        ".compare-chart",
        "div => div.data.filter(t => !t.meta.raw)"
        ".map(t => t.x.filter(x => x >= 3000 && x <= 3200).length)",
    )
    assert windows == [201, 201]
    dashboard.assert_clean()


@pytest.fixture
def token_server(tmp_path: Path) -> Iterator[LiveServer]:
    """A loopback server with authentication on (TRICKSCOPE_TOKEN)."""
    server = start_server(
        f"sqlite:///{tmp_path / 'trickscope.db'}",
        tmp_path / "server.log",
        env={"TRICKSCOPE_TOKEN": TOKEN},
    )
    yield server
    stop_server(server)


def test_table_and_compare_read_through_a_login_session(browser, token_server):
    api = Client(token_server.url, token=TOKEN)
    ids = [api.create_run(name=f"r{i}", config={"lr": 0.1 * (i + 1)}) for i in range(2)]
    for run_id in ids:
        api.post_points(run_id, {"loss/train": (steps(5), [5.0, 4.0, 3.0, 2.0, 1.0])})
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    try:
        page.goto(f"{token_server.url}/login?next=%2F")
        page.fill("#token", TOKEN)
        page.click("#login-button")
        page.wait_for_url(f"{token_server.url}/")
        page.wait_for_function("() => document.body.dataset.sparklines === 'true'")
        assert page.locator("svg.sparkline[data-points='5']").count() == 2
        page.click("#select-all")
        page.click("#compare-button")
        page.wait_for_url("**/compare?runs=*")
        page.wait_for_function("() => document.body.dataset.loaded === 'true'")
        page.wait_for_function(
            "() => document.querySelector('.compare-chart')?.dataset.series === '2'"
        )
        assert page.locator("#error-banner").is_hidden()
        assert not errors, errors
    finally:
        context.close()


def test_compare_follows_runs_that_are_still_training(dashboard, client, live_server):
    require_compare_page(live_server.url)
    a = client.create_run(name="a")
    b = client.create_run(name="b")
    for run_id in (a, b):
        client.post_points(run_id, {"loss": (steps(3), [3.0, 2.0, 1.0])})
    client.finish(b)
    dashboard.goto(f"/compare?runs={a},{b}")
    assert wait_panels(dashboard, 1)["loss"]["points"] == 6
    client.post_points(a, {"loss": (steps(2, start=3), [0.5, 0.25])})
    client.finish(a)
    page = dashboard.page
    page.wait_for_function("() => document.querySelector('.compare-chart').dataset.points === '8'")
    page.wait_for_function(
        "() => document.querySelectorAll('#compare-runs .badge-finished').length === 2"
    )
    dashboard.assert_clean()
