"""The run page's axes and shading: warmup from what watch saw, linear axes where zero is a value,
histogram axes bounded to the data, config keys that wrap only between their parts."""

from __future__ import annotations

import pytest

from tests.browser.test_run_page import steps, wait_chart, wait_loaded

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]


def lr_shapes(page) -> list[dict]:
    return page.eval_on_selector(
        "#chart-lr", "div => (div.layout.shapes || []).filter(s => s.name !== 'findings')"
    )


def test_warmup_is_shaded_from_the_scheduler_watch_saw(dashboard, client):
    # No config at all: only the setup document the agent declared names the warmup.
    run_id = client.create_run(project="nlp", name="warm")
    client.declare_setup(
        run_id, {"version": 1, "scheduler": {"class": "LambdaLR", "warmup_steps": 25}}
    )
    n = 60
    client.post_points(
        run_id,
        {
            "loss/train": (steps(n), [1.0] * n),
            "lr/group0": (steps(n), [min(1.0, (s + 1) / 25) * 1e-3 for s in range(n)]),
        },
    )
    dashboard.goto(f"/runs/{run_id}")
    wait_loaded(dashboard)
    page = dashboard.page
    wait_chart(dashboard, "chart-lr", n)
    (span,) = lr_shapes(page)
    assert (span["x0"], span["x1"], span["yref"]) == (0, 25, "paper")
    assert page.text_content("#card-lr h2").endswith("(warmup shaded)")
    assert page.text_content("#card-lr .note") == "warmup: steps 0\u202625 (from the scheduler)"
    dashboard.assert_clean()


def test_no_warmup_known_shades_nothing_and_says_nothing(dashboard, client):
    run_id = client.create_run(project="nlp", name="flat", config={"lr": 0.1})
    client.declare_setup(run_id, {"version": 1, "scheduler": {"class": "StepLR"}})
    client.post_points(run_id, {"lr/group0": (steps(10), [0.1] * 10)})
    dashboard.goto(f"/runs/{run_id}")
    wait_loaded(dashboard)
    page = dashboard.page
    wait_chart(dashboard, "chart-lr", 10)
    assert lr_shapes(page) == []
    assert "shaded" not in page.text_content("#card-lr h2")
    assert page.text_content("#card-lr .note") == ""
    dashboard.assert_clean()


def test_zero_is_drawn_on_a_linear_axis(dashboard, client):
    run_id = client.create_run(project="vision", name="wd")
    layers = ["fc.weight"]
    client.declare_layers(run_id, layers)
    n = 20
    client.post_points(
        run_id,
        {
            # Group 1 holds norms and biases: no decay, so its weight decay and shrink are 0.
            "wd/group0": (steps(n), [0.05] * n),
            "wd/group1": (steps(n), [0.0] * n),
            "wd/shrink/group0": (steps(n), [5e-5] * n),
            "wd/shrink/group1": (steps(n), [0.0] * n),
            # The EMA starts as a copy of the weights: distance 0 at the first step.
            "ema/distance": (steps(n), [0.0] + [0.01] * (n - 1)),
            # A layer whose gradient vanished: its norm is 0 from step 10.
            "grad_norm/fc.weight": (steps(n), [0.5] * 10 + [0.0] * 10),
            "update_ratio/fc.weight": (steps(n), [1e-3] * n),
        },
    )
    dashboard.goto(f"/runs/{run_id}")
    wait_loaded(dashboard)
    page = dashboard.page
    for chart, points in (
        ("chart-wd", 2 * n),
        ("chart-wdshrink", 2 * n),
        ("chart-ema", n),
        ("chart-layer-grad", n),
    ):
        data = wait_chart(dashboard, chart, points)
        assert data["yaxis"] == "linear", chart
        # Zero lies on the drawn axis and the zero trace is a line of real points, not gaps.
        low, high = page.eval_on_selector(f"#{chart}", "div => div._fullLayout.yaxis.range")
        assert low <= 0 <= high, (chart, low, high)
    zeros = page.eval_on_selector(
        "#chart-wd", "div => div.data.find(t => t.name === 'wd/group1').y"
    )
    assert zeros == [0] * n
    # Positive-only charts keep their log axis.
    assert wait_chart(dashboard, "chart-update-ratio", n)["yaxis"] == "log"
    dashboard.assert_clean()


def test_histogram_axes_end_where_the_data_does(dashboard, client):
    run_id = client.create_run(project="vision", name="hist")
    client.declare_layers(run_id, ["fc.weight"])
    hist_steps = list(range(100, 1001, 100))  # one histogram every 100 steps, from step 100
    client.post_points(run_id, {"grad_norm/fc.weight": (steps(1001), [1.0] * 1001)})
    client.post_histograms(
        run_id,
        "grad_hist/fc.weight",
        hist_steps,
        [-1.0 - s / 1000 for s in hist_steps],
        [0.5 + s / 1000 for s in hist_steps],
        [[1.0, 2.0, 3.0, 4.0] for _ in hist_steps],
    )
    dashboard.goto(f"/runs/{run_id}")
    wait_loaded(dashboard)
    page = dashboard.page
    wait_chart(dashboard, "chart-hist", len(hist_steps))
    x, y = page.eval_on_selector(
        "#chart-hist", "div => [div._fullLayout.xaxis.range, div._fullLayout.yaxis.range]"
    )
    assert x == [100, 1000]
    assert y == pytest.approx([-2.0, 1.5])
    dashboard.assert_clean()


# Where each line of an element's text starts: the index of its first character per line.
LINE_STARTS = """th => {
    const walker = document.createTreeWalker(th, NodeFilter.SHOW_TEXT);
    const chars = [];
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        for (let i = 0; i < node.length; i += 1) {
            const range = document.createRange();
            range.setStart(node, i);
            range.setEnd(node, i + 1);
            chars.push([node.data[i], range.getBoundingClientRect().top]);
        }
    }
    const starts = [];
    chars.forEach(([, top], i) => { if (i > 0 && top > chars[i - 1][1] + 2) starts.push(i); });
    return {text: chars.map(([c]) => c).join(''), starts};
}"""


def test_a_long_config_key_wraps_only_between_its_parts(dashboard, client):
    key = "model.encoder.layers.self_attention.query_key_value.initializer_range_multiplier"
    system = {"python": "3.11.7", "torch": "2.5.0", "cpu_count": 8}
    run_id = client.create_run(
        project="nlp", name="keys", config={key: 0.02, "lr": 3e-4}, system=system
    )
    client.post_points(run_id, {"loss/train": (steps(3), [1.0, 0.9, 0.8])})
    page = dashboard.page
    page.set_viewport_size({"width": 700, "height": 900})
    dashboard.goto(f"/runs/{run_id}")
    wait_loaded(dashboard)
    # The folded lines say the essentials; keys not on a line are left out, never "undefined".
    assert page.text_content("#config-summary") == f"2 keys \u00b7 lr=0.0003 {key}=0.02"
    assert page.text_content("#system-summary") == "python 3.11.7 \u00b7 torch 2.5.0"
    page.click("#config-details > summary")
    row = page.locator("#config-table th", has_text="initializer").first
    assert row.get_attribute("title") == key
    lines = row.evaluate(LINE_STARTS)
    assert lines["text"] == key
    assert lines["starts"], "the key is longer than its column: it must wrap"
    for start in lines["starts"]:
        assert key[start - 1] in "._", (key[:start], key[start:])
    # The key stays inside its cell.
    overflow = row.evaluate("th => th.scrollWidth - th.clientWidth")
    assert overflow <= 0
    dashboard.assert_clean()
