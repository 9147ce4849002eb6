"""The run page's Health panel: findings from GET /runs/{id}/health as rows, clicks that pick a
layer or zoom to a step, untrusted names as text, the empty state, live refresh."""

from __future__ import annotations

import math
import time

import pytest

from tests.browser.test_run_page import steps, wait_chart, wait_loaded
from tests.helpers import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

HOSTILE_LAYER = "<img src=x onerror=alert(1)>"


def wait_health(dashboard, state: str, timeout: float = 15_000) -> None:
    """Wait (polling in the page) until the panel is in ``state`` (ok | findings | error)."""
    try:
        dashboard.page.wait_for_function(
            "s => document.getElementById('health')?.dataset.state === s",
            arg=state,
            timeout=timeout,
        )
    except Exception as exc:
        data = dashboard.page.eval_on_selector("#health", "h => ({...h.dataset})")
        raise AssertionError(f"#health never reached {state!r}: {data}") from exc


def rows(dashboard) -> list[dict[str, object]]:
    return dashboard.page.eval_on_selector_all(
        "#health li.finding",
        """lis => lis.map(li => ({
            check: li.dataset.check,
            severity: li.dataset.severity,
            action: li.dataset.action,
            badge: li.querySelector('.sev').textContent,
            title: li.querySelector('.finding-title').textContent,
            detail: li.querySelector('.finding-detail').textContent,
            chips: [...li.querySelectorAll('.chip')].map(c => [c.dataset.chip, c.textContent]),
        }))""",
    )


def in_viewport(dashboard, selector: str) -> bool:
    return dashboard.page.eval_on_selector(
        selector,
        """node => {
            const box = node.getBoundingClientRect();
            return box.top < window.innerHeight && box.bottom > 0;
        }""",
    )


def nan_run(client, layer: str, *, nan_at: int = 30, n: int = 60) -> tuple[str, list[str]]:
    """A run whose ``layer`` gradient turns NaN at ``nan_at``; the other layers stay finite."""
    run_id = client.create_run(project="vision", name="diverging")
    layers = ["conv1.weight", layer, "fc.weight"]
    client.declare_layers(run_id, layers)
    series = {"loss/train": (steps(n), [1.0 / (s + 1) for s in range(n)])}
    for name in layers:
        values = [0.5] * n
        if name == layer:
            values[nan_at:] = [math.nan] * (n - nan_at)
        series[f"grad_norm/{name}"] = (steps(n), values)
        series[f"weight_norm/{name}"] = (steps(n), [10.0] * n)
    client.post_points(run_id, series)
    return run_id, layers


def test_nan_layer_is_an_error_row_and_a_click_picks_the_layer(dashboard, client):
    layer = "layer2.0.conv1.weight"
    run_id, layers = nan_run(client, layer, nan_at=30)
    client.finish(run_id)
    dashboard.goto(f"/runs/{run_id}")
    wait_loaded(dashboard)
    wait_health(dashboard, "findings")
    page = dashboard.page

    found = rows(dashboard)
    first = found[0]
    assert first["check"] == "nonfinite-gradient"
    assert first["severity"] == "error"
    assert first["badge"] == "error"
    assert layer in first["title"] and "30" in first["title"]
    assert first["detail"]
    assert first["chips"] == [["step", "step 30"], ["layer", f"layer {layer}"]]
    assert first["action"] == "layer"
    assert "1 error" in page.text_content("#health-summary")
    assert page.locator("#health-status").is_hidden()
    # The panel sits right under the header, above the charts.
    order = page.evaluate(
        """() => [...document.querySelectorAll('main > section, main > div.diagnosis')]
            .map(s => s.id || s.className)"""
    )
    assert order.index("diagnosis") == order.index("run-header") + 1
    assert page.locator("main > .diagnosis > #health").count() == 1

    # The first layer is selected on load; the finding selects the NaN layer instead.
    wait_chart(dashboard, "chart-layer-grad", 60)
    assert page.input_value("#layer-select") == layers[0]
    page.click("#health li[data-check='nonfinite-gradient'] button")
    page.wait_for_function("l => document.body.dataset.layer === l", arg=layer)
    assert page.input_value("#layer-select") == layer
    # Its charts are drawn and zoomed around the step (the window is re-read).
    page.wait_for_function(
        """() => {
            const w = document.getElementById('chart-layer-grad').dataset.window || '';
            const [lo, hi] = w.split(',').map(Number);
            return w !== '' && lo <= 30 && 30 <= hi;
        }"""
    )
    # The per-layer section is scrolled into view.
    page.wait_for_function(
        """() => {
            const box = document.getElementById('layer-picker').getBoundingClientRect();
            return box.top >= -1 && box.top < window.innerHeight / 2;
        }"""
    )
    assert in_viewport(dashboard, "#layer-picker")
    dashboard.assert_clean()


def test_step_finding_zooms_the_loss_chart(dashboard, client):
    run_id = client.create_run(project="vision", name="loss-nan")
    n = 200
    values = [1.0 / (s + 1) for s in range(n)]
    values[150:] = [math.nan] * (n - 150)
    client.post_points(run_id, {"loss": (steps(n), values)})
    client.finish(run_id)
    dashboard.goto(f"/runs/{run_id}")
    wait_loaded(dashboard)
    wait_health(dashboard, "findings")
    page = dashboard.page
    found = {row["check"]: row for row in rows(dashboard)}
    row = found["nonfinite-loss"]
    assert row["severity"] == "error"
    assert row["chips"] == [["step", "step 150"]]
    assert row["action"] == "step"
    wait_chart(dashboard, "chart-loss", n)

    page.click("#health li[data-check='nonfinite-loss'] button")
    page.wait_for_function(
        """() => {
            const div = document.getElementById('chart-loss');
            const [lo, hi] = div.layout.xaxis.range;
            const w = div.dataset.window || '';
            return lo < 150 && 150 < hi && hi - lo < 100 && w !== '';
        }"""
    )
    lo, hi = page.eval_on_selector("#chart-loss", "div => div.dataset.window.split(',')")
    assert int(lo) <= 150 <= int(hi)
    dashboard.assert_clean()


def test_hostile_layer_name_is_text(dashboard, client):
    run_id, _ = nan_run(client, HOSTILE_LAYER, nan_at=5, n=20)
    client.finish(run_id, status="failed")
    dashboard.goto(f"/runs/{run_id}")
    wait_loaded(dashboard)
    wait_health(dashboard, "findings")
    page = dashboard.page
    first = rows(dashboard)[0]
    assert first["check"] == "nonfinite-gradient"
    assert HOSTILE_LAYER in first["title"]
    assert ["layer", f"layer {HOSTILE_LAYER}"] in first["chips"]
    assert page.locator("#health img, img").count() == 0
    page.click("#health li[data-check='nonfinite-gradient'] button")
    page.wait_for_function("l => document.body.dataset.layer === l", arg=HOSTILE_LAYER)
    assert page.input_value("#layer-select") == HOSTILE_LAYER
    assert page.locator("img").count() == 0
    # Give a would-be onerror handler time to fire before judging.
    page.wait_for_timeout(300)
    assert dashboard.dialogs == []
    dashboard.assert_clean()


def test_healthy_run_says_no_problems_found(dashboard, client):
    run_id = client.create_run(
        project="vision",
        name="healthy",
        config={"lr": 0.1, "tricks": {"clip": {"max_norm": 1.0}, "ema": {"decay": 0.99}}},
    )
    layers = ["conv1.weight", "fc.weight"]
    client.declare_layers(run_id, layers)
    n = 30
    series = {"loss": (steps(n), [1.0 / (s + 1) for s in range(n)])}
    series.update({f"grad_norm/{layer}": (steps(n), [0.5] * n) for layer in layers})
    client.post_points(run_id, series)
    client.finish(run_id)
    dashboard.goto(f"/runs/{run_id}")
    wait_loaded(dashboard)
    wait_health(dashboard, "ok")
    page = dashboard.page
    # Servers that list their checks also say how many ran.
    assert page.text_content("#health-status").startswith("No problems found")
    assert page.locator("#health li.finding").count() == 0
    assert page.text_content("#health-summary") == ""
    # config.tricks is summed up in the Tricks box, not dumped into the config table.
    keys = page.eval_on_selector_all("#config-table th", "ths => ths.map(th => th.textContent)")
    assert keys == ["lr"]
    cards = page.eval_on_selector_all("#trick-summary .trick", "ds => ds.map(d => d.dataset.trick)")
    assert cards == ["clip", "ema"]
    dashboard.assert_clean()


def test_info_finding_for_a_layer_without_gradients(dashboard, client):
    run_id = client.create_run(project="vision", name="frozen")
    layers = ["backbone.weight", "head.weight"]
    client.declare_layers(run_id, layers)
    n = 10
    client.post_points(
        run_id,
        {
            "loss": (steps(n), [1.0] * n),
            "grad_norm/head.weight": (steps(n), [0.5] * n),
            "weight_norm/backbone.weight": (steps(n), [3.0] * n),
        },
    )
    client.finish(run_id)
    dashboard.goto(f"/runs/{run_id}")
    wait_loaded(dashboard)
    wait_health(dashboard, "findings")
    found = {row["check"]: row for row in rows(dashboard)}
    row = found["no-gradient"]
    assert row["severity"] == "info"
    assert ["layer", "layer backbone.weight"] in row["chips"]
    dashboard.page.click("#health li[data-check='no-gradient'] button")
    dashboard.page.wait_for_function("() => document.body.dataset.layer === 'backbone.weight'")
    wait_chart(dashboard, "chart-layer-weight", n)
    dashboard.assert_clean()


def test_panel_refreshes_while_the_run_is_live(dashboard, client):
    run_id = client.create_run(project="vision", name="live-health")
    layers = ["conv1.weight", "fc.weight"]
    client.declare_layers(run_id, layers)
    n = 20
    series = {"loss": (steps(n), [1.0] * n)}
    series.update({f"grad_norm/{layer}": (steps(n), [0.5] * n) for layer in layers})
    client.post_points(run_id, series)
    # The page's timers on a clock the test can stop (it runs with real time until then).
    dashboard.page.clock.install()
    dashboard.goto(f"/runs/{run_id}")
    wait_loaded(dashboard)
    wait_health(dashboard, "ok")
    page = dashboard.page
    page.wait_for_function("() => document.getElementById('live-state').dataset.state === 'live'")
    before = int(page.get_attribute("#health", "data-refreshes"))
    page.evaluate("() => { window.__heatmap = document.getElementById('chart-heatmap'); }")

    # fc.weight goes NaN while the page watches: the panel picks it up within its refresh period.
    started = time.monotonic()
    client.post_points(
        run_id,
        {
            "loss": (steps(5, n), [1.0] * 5),
            "grad_norm/conv1.weight": (steps(5, n), [0.5] * 5),
            "grad_norm/fc.weight": (steps(5, n), [math.nan] * 5),
        },
    )
    wait_health(dashboard, "findings", timeout=20_000)
    assert time.monotonic() - started < 20
    first = rows(dashboard)[0]
    assert (first["check"], first["severity"]) == ("nonfinite-gradient", "error")
    assert ["layer", "layer fc.weight"] in first["chips"]
    assert ["step", f"step {n}"] in first["chips"]
    assert int(page.get_attribute("#health", "data-refreshes")) > before
    assert page.evaluate("() => document.getElementById('chart-heatmap') === window.__heatmap")

    # More points, same findings: the stream's next diagnosis says so (or pushes a report
    # whose details moved on); the panel keeps its rows (same nodes) and reads nothing itself.
    reads = (
        "() => { const d = document.getElementById('health').dataset; "
        "return Number(d.refreshes) - Number(d.pushes || 0); }"
    )  # answers less pushed reports
    heard = (
        "() => { const d = document.getElementById('health').dataset; "
        "return Number(d.pushes || 0) + Number(d.unchanged || 0); }"
    )  # what the stream said about health
    page.evaluate("() => { window.__row = document.querySelector('#health li.finding'); }")
    said, count = page.evaluate(heard), page.evaluate(reads)
    for first in (n + 5, n + 10, n + 15):  # past the page's 5 s: a read would have come by now
        client.post_points(
            run_id,
            {
                "loss": (steps(5, first), [1.0] * 5),
                "grad_norm/conv1.weight": (steps(5, first), [0.5] * 5),
                "grad_norm/fc.weight": (steps(5, first), [math.nan] * 5),
            },
        )
        page.wait_for_function(f"() => ({heard})() > {said}", timeout=20_000)
        said = page.evaluate(heard)
    assert page.evaluate(reads) == count
    assert page.evaluate("() => document.querySelector('#health li.finding') === window.__row")

    # The run ends: the panel reads once more at once, not on its 5 s timer. With the page's
    # clock stopped no timer can fire, so only the end itself can bring that read, however
    # long a loaded machine takes to deliver it.
    page.clock.pause_at(page.evaluate("() => Date.now()") + 1)
    count = page.evaluate(reads)
    client.finish(run_id)
    wait_until(lambda: page.evaluate(reads) > count, timeout=20, what="the read at the end")
    assert page.get_attribute("#live-state", "data-state") == "ended"
    page.clock.resume()
    dashboard.assert_clean()
