"""The run page: charts and their point counts, live extension, non-finite markers, untrusted
text, the per-layer heatmap."""

from __future__ import annotations

import math
import threading

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]


def wait_loaded(dashboard) -> None:
    dashboard.page.wait_for_function("() => document.body.dataset.loaded === 'true'")


def chart_data(dashboard, chart_id: str) -> dict[str, str]:
    return dashboard.page.eval_on_selector(f"#{chart_id}", "div => ({...div.dataset})")


def wait_chart(dashboard, chart_id: str, points: int, timeout: float = 15_000) -> dict[str, str]:
    """Wait (polling in the page) until the chart says it draws exactly ``points`` points."""
    try:
        dashboard.page.wait_for_function(
            "([id, n]) => document.getElementById(id)?.dataset.points === String(n)",
            arg=[chart_id, points],
            timeout=timeout,
        )
    except Exception as exc:
        data = chart_data(dashboard, chart_id)
        raise AssertionError(f"#{chart_id} never drew {points} points: {data}") from exc
    return chart_data(dashboard, chart_id)


def trace_names(dashboard, chart_id: str) -> list[str]:
    return dashboard.page.eval_on_selector(
        f"#{chart_id}",
        """div => div.data
            .filter(t => !['non-finite', 'findings'].includes(t.name)).map(t => t.name)""",
    )


def steps(n: int, start: int = 0) -> list[int]:
    return list(range(start, start + n))


def test_run_page_draws_each_chart_with_its_points(dashboard, client):
    run_id = client.create_run(
        project="vision",
        name="resnet-baseline",
        config={"lr": 0.1, "optimizer": "sgd", "model": {"depth": 18}},
        tags=["baseline"],
        system={"torch": "2.13.0", "cuda": None},
    )
    layers = ["conv1.weight", "layer1.0.conv1.weight", "fc.weight"]
    client.declare_layers(run_id, layers)
    series = {
        "loss/train": (steps(50), [1 / (s + 1) for s in range(50)]),
        "loss/val": (steps(10, 0), [0.5] * 10),
        "lr/group0": (steps(50), [0.1] * 50),
        "lr/group1": (steps(50), [0.01] * 50),
        "eval/acc_raw": (steps(10), [0.5 + s / 100 for s in range(10)]),
        "eval/acc_ema": (steps(10), [0.52 + s / 100 for s in range(10)]),
        "grad_norm/total": (steps(50), [2.0] * 50),
        "throughput/samples_per_s": (steps(20), [900.0] * 20),
    }
    series.update({f"grad_norm/{layer}": (steps(50), [0.5] * 50) for layer in layers})
    client.post_points(run_id, series)

    dashboard.goto(f"/runs/{run_id}")
    wait_loaded(dashboard)
    page = dashboard.page

    assert page.text_content("#run-name") == "resnet-baseline"
    assert page.text_content("#run-project") == "vision"
    assert page.text_content("#run-status") == "running"
    config = dict(
        page.eval_on_selector_all(
            "#config-table tr",
            "trs => trs.map(tr => [tr.cells[0].textContent, tr.cells[1].textContent])",
        )
    )
    assert config == {"lr": "0.1", "optimizer": "sgd", "model": '{"depth":18}'}
    assert "2.13.0" in page.text_content("#system-table")

    wait_chart(dashboard, "chart-loss", 60)
    assert sorted(trace_names(dashboard, "chart-loss")) == ["loss/train", "loss/val"]
    wait_chart(dashboard, "chart-lr", 100)
    assert sorted(trace_names(dashboard, "chart-lr")) == ["lr/group0", "lr/group1"]
    wait_chart(dashboard, "chart-acc", 20)
    assert sorted(trace_names(dashboard, "chart-acc")) == ["eval/acc_ema", "eval/acc_raw"]
    wait_chart(dashboard, "chart-gradnorm", 50)
    heatmap = wait_chart(dashboard, "chart-heatmap", 150)
    assert heatmap["layers"] == "3"
    other = wait_chart(dashboard, "chart-other-throughput", 20)
    assert other["series"] == "1"
    page.click("button[data-logy='loss']")
    page.wait_for_function(
        "() => document.getElementById('chart-loss').layout.yaxis.type === 'log'"
    )
    # Per-layer series feed only the heatmap, never a line chart.
    assert page.locator("[id^='chart-other-grad_norm']").count() == 0
    dashboard.assert_clean()


def test_chart_gains_points_while_the_run_streams(dashboard, client):
    run_id = client.create_run(project="vision", name="live")
    client.post_points(run_id, {"loss": (steps(10), [1.0] * 10)})
    dashboard.goto(f"/runs/{run_id}")
    wait_loaded(dashboard)
    wait_chart(dashboard, "chart-loss", 10)
    dashboard.page.wait_for_function(
        "() => document.getElementById('live-state').dataset.state === 'live'"
    )

    # The user zooms in; live updates must keep that view.
    dashboard.page.evaluate(
        "() => Plotly.relayout('chart-loss', {'xaxis.range': [0, 5], 'yaxis.range': [0, 2]})"
    )
    errors: list[BaseException] = []

    def stream() -> None:
        try:
            for batch in range(5):
                first = 10 + batch * 10
                client.post_points(
                    run_id,
                    {
                        "loss": (steps(10, first), [1.0 / (first + 1)] * 10),
                        "lr/group0": (steps(10, first), [0.1] * 10),
                        "throughput/samples_per_s": (steps(10, first), [900.0] * 10),
                    },
                )
                # Give the page a chance to draw batch by batch, not all at once.
                threading.Event().wait(0.15)
        except BaseException as exc:  # reported in the test thread
            errors.append(exc)

    worker = threading.Thread(target=stream, daemon=True)
    worker.start()
    try:
        wait_chart(dashboard, "chart-loss", 60)
        # A new series arriving live gets its own trace.
        wait_chart(dashboard, "chart-lr", 50)
        # So does a new family of other metrics, in a card of its own.
        wait_chart(dashboard, "chart-other-throughput", 50)
    finally:
        worker.join(timeout=20)
    assert not errors, errors
    data = dashboard.page.eval_on_selector(
        "#chart-loss", "div => div.data.find(t => t.name === 'loss').x"
    )
    assert data == steps(60), "points must be in order, each step once"
    zoom = dashboard.page.eval_on_selector(
        "#chart-loss", "div => [div.layout.xaxis.range, div.layout.yaxis.range]"
    )
    assert zoom == [[0, 5], [0, 2]]
    dashboard.assert_clean()


def test_status_event_updates_the_badge(dashboard, client):
    run_id = client.create_run(project="vision", name="finishing")
    client.post_points(run_id, {"loss": (steps(5), [1.0] * 5)})
    dashboard.goto(f"/runs/{run_id}")
    wait_loaded(dashboard)
    dashboard.page.wait_for_function(
        "() => document.getElementById('live-state').dataset.state === 'live'"
    )
    client.finish(run_id)
    dashboard.page.wait_for_function(
        "() => document.getElementById('run-status').textContent === 'finished'"
    )
    dashboard.assert_clean()


def test_non_finite_values_are_marked_not_hidden(dashboard, client):
    run_id = client.create_run(project="vision", name="diverged")
    values = [1.0] * 20
    values[5] = math.nan
    values[7] = math.inf
    values[9] = -math.inf
    client.post_points(
        run_id, {"loss": (steps(20), values), "grad_norm/total": (steps(3), [1.0, math.nan, 2.0])}
    )

    dashboard.goto(f"/runs/{run_id}")
    wait_loaded(dashboard)
    loss = wait_chart(dashboard, "chart-loss", 20)
    assert loss["nonfinite"] == "3"
    page = dashboard.page
    line_y = page.eval_on_selector("#chart-loss", "div => div.data.find(t => t.name === 'loss').y")
    assert [line_y[i] for i in (5, 7, 9)] == [None, None, None]
    marks = page.eval_on_selector(
        "#chart-loss",
        "div => { const t = div.data.find(t => t.name === 'non-finite'); return [t.x, t.text]; }",
    )
    assert marks[0] == [5, 7, 9]
    assert ["NaN" in marks[1][0], "+Inf" in marks[1][1], "\u2212Inf" in marks[1][2]] == [True] * 3
    # The markers are drawn: Plotly renders one point per marker in the SVG.
    assert page.locator("#chart-loss .scatterlayer .trace:first-child path.point").count() == 3
    assert wait_chart(dashboard, "chart-gradnorm", 3)["nonfinite"] == "1"
    dashboard.assert_clean()


HOSTILE = "<img src=x onerror=alert(1)>"


def test_untrusted_text_is_shown_literally_and_never_runs(dashboard, client):
    run_id = client.create_run(
        project="<b>proj</b>",
        name=HOSTILE,
        config={"<img src=x onerror=alert(2)>": "<script>alert(3)</script>"},
        tags=["<i>tag</i>"],
        system={"host": "<svg onload=alert(4)>"},
    )
    layer = "<img src=x onerror=alert(5)>.weight"
    client.declare_layers(run_id, [layer])
    client.post_points(
        run_id,
        {
            "loss/<img src=x onerror=alert(6)>": (steps(3), [1.0, 2.0, 3.0]),
            f"grad_norm/{layer}": (steps(3), [1.0, 2.0, 3.0]),
        },
    )

    dashboard.goto("/")
    dashboard.page.wait_for_function(
        "() => document.querySelectorAll('#runs-body tr').length === 1"
    )
    assert dashboard.page.text_content("#runs-body a") == HOSTILE
    assert dashboard.page.text_content("#runs-body td") == "<b>proj</b>"
    assert dashboard.page.locator("img, script:not([src]), svg[onload], b, i").count() == 0

    dashboard.goto(f"/runs/{run_id}")
    wait_loaded(dashboard)
    page = dashboard.page
    assert page.text_content("#run-name") == HOSTILE
    assert page.text_content("#config-table th") == "<img src=x onerror=alert(2)>"
    assert page.text_content("#config-table td") == "<script>alert(3)</script>"
    assert page.text_content("#run-tags") == "<i>tag</i>"
    assert "<svg onload=alert(4)>" in page.text_content("#system-table")
    wait_chart(dashboard, "chart-loss", 3)
    wait_chart(dashboard, "chart-heatmap", 3)
    assert page.locator("img, svg[onload], main b, main i").count() == 0
    # The legend shows the series name as text.
    legend = page.text_content("#chart-loss .legend")
    assert "loss/<img src=x onerror=alert(6)>" in legend
    assert dashboard.dialogs == []
    dashboard.assert_clean()


def test_heatmap_of_200_layers_renders_in_model_order(dashboard, client):
    run_id = client.create_run(project="vision", name="deep")
    layers = [f"blocks.{i}.mlp.fc{1 + i % 2}.weight" for i in range(200)]
    client.declare_layers(run_id, layers)
    n_steps = 20
    series = {
        f"grad_norm/{layer}": (
            steps(n_steps),
            [10.0 ** (-(i % 7)) * (1 + s / n_steps) for s in range(n_steps)],
        )
        for i, layer in enumerate(layers)
    }
    series[f"grad_norm/{layers[3]}"][1][4] = math.inf
    client.post_points(run_id, series)

    dashboard.goto(f"/runs/{run_id}")
    wait_loaded(dashboard)
    heatmap = wait_chart(dashboard, "chart-heatmap", 200 * n_steps)
    assert heatmap["layers"] == "200"
    assert heatmap["nonfinite"] == "1"
    page = dashboard.page
    info = page.eval_on_selector(
        "#chart-heatmap",
        """div => ({
            type: div.data[0].type,
            y: div.data[0].y,
            z00: div.data[0].z[0][0],
            hover00: div.data[0].customdata[0][0],
            height: div.getBoundingClientRect().height,
            ticks: div.querySelectorAll('.yaxislayer-above g.ytick').length,
        })""",
    )
    assert info["type"] == "heatmap"
    assert info["y"] == layers
    # Colour is log10 of the value; the hover shows the value itself.
    assert info["z00"] == pytest.approx(0.0)
    assert info["hover00"] == "1"
    # Fixed row height: the chart grows with the model and labels every layer.
    assert info["height"] >= 200 * 8
    assert info["ticks"] == 200
    assert page.locator("#chart-heatmap .hm image, #chart-heatmap .hm").count() >= 1
    dashboard.assert_clean()


def test_heatmap_of_a_signed_statistic_keeps_negative_values_on_a_diverging_scale(
    dashboard, client
):
    run_id = client.create_run(project="vision", name="means")
    layers = ["a.weight", "b.weight", "c.weight"]
    client.declare_layers(run_id, layers)
    client.post_points(
        run_id,
        {
            "grad_mean/a.weight": (steps(3), [-1e-3, -1e-5, 0.0]),
            "grad_mean/b.weight": (steps(3), [1e-3, 1e-5, 1e-4]),
            "grad_mean/c.weight": (steps(3), [-0.1, 0.1, math.nan]),
        },
    )
    dashboard.goto(f"/runs/{run_id}")
    wait_loaded(dashboard)
    heatmap = wait_chart(dashboard, "chart-heatmap", 9)
    assert heatmap["nonfinite"] == "1"
    info = dashboard.page.eval_on_selector(
        "#chart-heatmap",
        """div => ({
            z: div.data[0].z,
            zmin: div.data[0].zmin,
            zmax: div.data[0].zmax,
            title: div.data[0].colorbar.title.text,
            ticks: div.data[0].colorbar.ticktext,
        })""",
    )
    # Decades above the smallest magnitude (1e-5), plus one, signed; zero in the middle.
    assert info["z"] == [[-3, -1, 0], [3, 1, 2], [-5, 5, None]]
    assert (info["zmin"], info["zmax"]) == (-5, 5)
    assert info["title"] == "grad_mean (signed log)"
    assert {"0", "1e-5", "-1e-5", "1e-1", "-1e-1"} <= set(info["ticks"])
    dashboard.assert_clean()


def test_overview_shows_a_preview_while_plotly_loads_then_the_plotly_chart(dashboard, client):
    """A cold load parses Plotly for a second or more: the points are drawn as SVG meanwhile."""
    run_id = client.create_run(name="preview")
    values = [1 / (s + 1) for s in range(40)]
    values[5] = math.nan
    client.post_points(
        run_id,
        {
            "loss/<img src=x onerror=alert(1)>": (steps(40), values),
            "grad_norm/total": (steps(40), [2.0] * 40),
        },
    )
    page = dashboard.page
    held = []

    def hold(route) -> None:  # Plotly's response waits until the test lets it through
        held.append(route)

    page.route("**/static/vendor/plotly-cartesian-*.min.js", hold)
    dashboard.goto(f"/runs/{run_id}")
    page.wait_for_selector("#chart-loss svg.chart-preview")
    page.wait_for_selector("#chart-gradnorm svg.chart-preview")
    preview = page.text_content("#chart-loss svg.chart-preview")
    assert "loss/<img src=x onerror=alert(1)>" in preview  # shown as text
    assert "×" in preview  # the NaN at step 5 is marked
    line = page.get_attribute("#chart-loss svg.chart-preview path", "d")
    assert line.count("M") == 2  # the line breaks at the NaN
    hooks = page.evaluate("() => ({...window.__trickscope})")
    assert hooks["firstShownAt"] is not None and hooks["firstChartAt"] is None
    assert len(held) == 1
    held[0].continue_()
    wait_loaded(dashboard)
    wait_chart(dashboard, "chart-loss", 40)
    assert page.locator("#chart-loss svg.chart-preview").count() == 0
    assert page.locator("#chart-loss .main-svg").count() >= 1
    dashboard.assert_clean()
