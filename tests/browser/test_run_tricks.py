"""The run page around the tricks: trick summary and panels, the layer picker and its charts,
the update-ratio band, histograms over time, zoom re-reads, and live resume after a drop."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import pytest

from tests.browser.test_run_page import chart_data, steps, trace_names, wait_chart, wait_loaded
from tests.helpers import start_server, stop_server
from trickscope_server.services.health.updates import UPDATE_RATIO_BAND, UPDATE_RATIO_TYPICAL

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

TRICKS_CONFIG = {
    "lr": 0.001,
    "tricks": {
        "schedule": {"warmup_steps": 20, "decay": "cosine", "total_steps": 100},
        "ema": {"decay": 0.999, "buffers": "copy"},
        "clip": {"max_norm": 1.0},
    },
}


def test_trick_panels_appear_only_for_reported_tricks(dashboard, client):
    run_id = client.create_run(project="vision", name="tricks", config=TRICKS_CONFIG)
    n = 40
    client.post_points(
        run_id,
        {
            "loss/train": (steps(n), [1.0] * n),
            "lr/group0": (steps(n), [min(1, (s + 1) / 20) * 1e-3 for s in range(n)]),
            "lr/group1": (steps(n), [1e-4] * n),
            "ema/decay": (steps(n), [0.999] * n),
            "ema/distance": (steps(n), [0.01] * n),
            "eval/acc_raw": (steps(4, 0), [0.5, 0.6, 0.7, 0.8]),
            "eval/acc_ema": (steps(4, 0), [0.55, 0.65, 0.75, 0.85]),
            "eval/loss_raw": (steps(4, 0), [1.0, 0.9, 0.8, 0.7]),
            "eval/loss_ema": (steps(4, 0), [0.9, 0.8, 0.7, 0.6]),
            "clip/pre_norm": (steps(n), [2.0 if s % 2 else 0.5 for s in range(n)]),
            "clip/post_norm": (steps(n), [1.0 if s % 2 else 0.5 for s in range(n)]),
            "clip/threshold": (steps(n), [1.0] * n),
            "clip/coef": (steps(n), [0.5 if s % 2 else 1.0 for s in range(n)]),
            "clip/clipped": (steps(n), [float(s % 2) for s in range(n)]),
            "drop_path/rate/blocks.0": (steps(n), [0.0] * n),
            "drop_path/rate/blocks.1": (steps(n), [0.1] * n),
            "drop_path/realised/blocks.1": (steps(n), [0.09] * n),
        },
    )
    dashboard.goto(f"/runs/{run_id}")
    wait_loaded(dashboard)
    page = dashboard.page

    # The header sums up config.tricks, one card per trick, as text.
    tricks = page.eval_on_selector_all(
        "#trick-summary .trick", "ds => ds.map(d => [d.dataset.trick, d.textContent])"
    )
    assert [name for name, _ in tricks] == ["clip", "ema", "schedule"]
    assert "warmup_steps 20" in dict(tricks)["schedule"]

    wait_chart(dashboard, "chart-lr", 2 * n)
    # The warmup span; findings at a step add their own lines (named "findings").
    shapes = page.eval_on_selector(
        "#chart-lr", "div => div.layout.shapes.filter(s => s.name !== 'findings')"
    )
    assert len(shapes) == 1
    assert (shapes[0]["x0"], shapes[0]["x1"], shapes[0]["yref"]) == (0, 20, "paper")
    assert "warmup" in page.text_content("#card-lr .note")

    wait_chart(dashboard, "chart-acc", 8)
    assert sorted(trace_names(dashboard, "chart-acc")) == ["eval/acc_ema", "eval/acc_raw"]
    wait_chart(dashboard, "chart-evalloss", 8)
    wait_chart(dashboard, "chart-ema", n)
    wait_chart(dashboard, "chart-emadecay", n)
    wait_chart(dashboard, "chart-clip", 3 * n)
    assert sorted(trace_names(dashboard, "chart-clip")) == [
        "clip/post_norm",
        "clip/pre_norm",
        "clip/threshold",
    ]
    wait_chart(dashboard, "chart-clipped", 2 * n)
    assert page.text_content("#card-clipped .note") == (
        f"clipped on 50% of the last {n} logged steps"
    )
    wait_chart(dashboard, "chart-droppath", 3 * n)
    dashes = page.eval_on_selector(
        "#chart-droppath",
        "div => Object.fromEntries(div.data.slice(1).map(t => [t.name, t.line.dash || 'solid']))",
    )
    assert dashes == {
        "drop_path/rate/blocks.0": "dash",
        "drop_path/rate/blocks.1": "dash",
        "drop_path/realised/blocks.1": "solid",
    }
    # Tricks the run did not report get no panel.
    for absent in ("wd", "accum", "opt", "optlr", "epsdom", "amp"):
        assert page.locator(f"#chart-{absent}").count() == 0, absent
    # Panels follow the fixed trick order.
    order = page.eval_on_selector_all("#tricks-panels > .card", "cs => cs.map(c => c.id)")
    assert order == [
        "card-lr",
        "card-acc",
        "card-evalloss",
        "card-ema",
        "card-emadecay",
        "card-droppath",
        "card-clip",
        "card-clipped",
    ]
    dashboard.assert_clean()


def test_accuracy_panel_takes_accuracy_series_and_leaves_accumulation_its_own(dashboard, client):
    run_id = client.create_run(project="vision", name="accum")
    n = 10
    client.post_points(
        run_id,
        {
            "acc": (steps(n), [0.5] * n),
            "accuracy/val": (steps(n), [0.6] * n),
            "eval/acc_raw": (steps(n), [0.7] * n),
            "accum/micro_steps": (steps(n), [4.0] * n),
            "accum/effective_batch": (steps(n), [128.0] * n),
        },
    )
    dashboard.goto(f"/runs/{run_id}")
    wait_loaded(dashboard)
    wait_chart(dashboard, "chart-acc", 3 * n)
    assert sorted(trace_names(dashboard, "chart-acc")) == ["acc", "accuracy/val", "eval/acc_raw"]
    wait_chart(dashboard, "chart-accum", 2 * n)
    assert sorted(trace_names(dashboard, "chart-accum")) == [
        "accum/effective_batch",
        "accum/micro_steps",
    ]
    dashboard.assert_clean()


def test_a_distributed_run_gets_per_rank_panels_and_its_straggler_named(dashboard, client):
    run_id = client.create_run(project="ddp", name="ranks", config={})
    n = 20
    series = {"loss/train": (steps(n), [1.0] * n), "rank/1/loss/train": (steps(n), [1.1] * n)}
    for rank in range(3):
        series[f"rank/{rank}/step_time"] = (steps(n), [0.2] * n)
        series[f"rank/{rank}/data_time"] = (steps(n), [0.15 if rank == 2 else 0.01] * n)
        series[f"rank/{rank}/grad_norm"] = (steps(n), [1.0] * n)
        series[f"rank/{rank}/weight_norm"] = (steps(n), [9.0] * n)
        host = {"hostname": f"node-{rank // 2}", "pid": 100 + rank, "local_rank": rank % 2}
        client.declare_rank(run_id, rank, host)
    client.declare_rank(run_id, 10, {"hostname": "<b>node-5</b>", "pid": 110})  # text, in order
    series["rank/2/weight_norm"] = (steps(n), [9.0] * 12 + [9.5] * (n - 12))  # drifts at 12
    client.post_points(run_id, series)
    dashboard.goto(f"/runs/{run_id}")
    wait_loaded(dashboard)
    page = dashboard.page

    wait_chart(dashboard, "chart-ranktime", 6 * n)
    wait_chart(dashboard, "chart-ranknorm", 6 * n)
    wait_chart(dashboard, "chart-ranklog", n)
    order = page.eval_on_selector_all("#ranks-panels > .card", "cs => cs.map(c => c.id)")
    assert order == ["card-ranktime", "card-ranknorm", "card-ranklog"]
    assert page.is_hidden("#tricks-section") and page.is_visible("#ranks-section")
    lines = page.eval_on_selector(
        "#chart-ranktime",
        """div => Object.fromEntries(div.data.filter(t => t.name !== 'non-finite')
                                   .map(t => [t.name, [t.line.color, t.line.dash]]))""",
    )
    assert len(lines) == 6
    # One colour per rank; the input wait dashed beside the step time.
    assert lines["rank/2/step_time"][0] == lines["rank/2/data_time"][0]
    assert lines["rank/2/step_time"][0] != lines["rank/1/step_time"][0]
    assert lines["rank/2/data_time"][1] == "dash" and lines["rank/2/step_time"][1] == "solid"
    assert page.text_content("#card-ranknorm .note") == "rank 2 differs from rank 0 from step 12"
    rows = page.eval_on_selector_all(
        "#system-table tr",
        "trs => trs.map(tr => [tr.cells[0].textContent, tr.cells[1].textContent])",
    )
    ranks = [row for row in rows if row[0].startswith("rank ")]
    assert ranks == [
        ["rank 0", "node-0 · pid 100 · local rank 0"],
        ["rank 1", "node-0 · pid 101 · local rank 1"],
        ["rank 2", "node-1 · pid 102 · local rank 0"],
        ["rank 10", "<b>node-5</b> · pid 110"],
    ]
    page.wait_for_function(
        "() => document.getElementById('health')?.dataset.state === 'findings'", timeout=15_000
    )
    titles = page.eval_on_selector_all("#health .finding-title", "ts => ts.map(t => t.textContent)")
    assert "Rank 2 waits 150 ms per step for its input, against 10 ms on the other ranks" in titles
    assert "Weights of rank 2 differ from rank 0's from step 12" in titles
    dashboard.assert_clean()

    agreeing = client.create_run(project="ddp", name="agree", config={})
    norms = {f"rank/{r}/grad_norm": (steps(n), [1.0] * n) for r in range(3)}
    client.post_points(agreeing, norms)
    dashboard.goto(f"/runs/{agreeing}")
    wait_loaded(dashboard)
    wait_chart(dashboard, "chart-ranknorm", 3 * n)
    assert page.text_content("#card-ranknorm .note") == "all 3 ranks agree at every step drawn"
    dashboard.assert_clean()


def test_run_without_trick_series_shows_no_trick_section(dashboard, client):
    run_id = client.create_run(project="vision", name="plain")
    client.post_points(run_id, {"loss": (steps(5), [1.0] * 5)})
    dashboard.goto(f"/runs/{run_id}")
    wait_loaded(dashboard)
    wait_chart(dashboard, "chart-loss", 5)
    assert dashboard.page.locator("#tricks-section").is_hidden()
    assert "no trick configuration" in dashboard.page.text_content("#trick-summary")
    dashboard.assert_clean()


def test_layer_picker_draws_the_chosen_layers_statistics(dashboard, client):
    run_id = client.create_run(project="vision", name="layers")
    layers = [f"blocks.{i}.attn.qkv.weight" for i in range(30)] + ["head.weight"]
    client.declare_layers(run_id, layers)
    n = 25
    series = {}
    for i, layer in enumerate(layers):
        series[f"grad_norm/{layer}"] = (steps(n), [0.1 * (i + 1)] * n)
        series[f"grad_max/{layer}"] = (steps(n), [0.01 * (i + 1)] * n)
        series[f"weight_norm/{layer}"] = (steps(n), [10.0 + i] * n)
        series[f"update_ratio/{layer}"] = (steps(n), [1e-3 * (1 + i / 10)] * n)
        series[f"grad_zero_frac/{layer}"] = (steps(n), [0.0] * n)
    series["opt/eps_dominance/head.weight"] = (steps(n), [0.7] * n)
    # Signed means get a linear chart of their own, beside the magnitudes on a log axis.
    series["grad_mean/head.weight"] = (steps(n), [(-1) ** s * 1e-3 for s in range(n)])
    series["grad_std/head.weight"] = (steps(n), [0.02] * n)
    series["weight_mean/head.weight"] = (steps(n), [-0.5] * n)
    client.post_points(run_id, series)

    dashboard.goto(f"/runs/{run_id}")
    wait_loaded(dashboard)
    page = dashboard.page
    options = page.eval_on_selector_all("#layer-select option", "os => os.map(o => o.value)")
    assert options == layers, "layers are offered in model order"
    assert page.text_content("#layer-count") == "31 layers"
    # The first layer is drawn at once.
    wait_chart(dashboard, "chart-layer-grad", 2 * n)
    assert sorted(trace_names(dashboard, "chart-layer-grad")) == [
        f"grad_max/{layers[0]}",
        f"grad_norm/{layers[0]}",
    ]

    page.fill("#layer-filter", "head")
    assert page.eval_on_selector_all("#layer-select option", "os => os.map(o => o.value)") == [
        layers[0],
        "head.weight",
    ]
    assert page.text_content("#layer-count") == "1 of 31 layers"
    page.select_option("#layer-select", "head.weight")
    page.wait_for_function("() => document.body.dataset.layer === 'head.weight'")
    grad = wait_chart(dashboard, "chart-layer-grad", 3 * n)
    assert grad["series"] == "3"
    assert sorted(trace_names(dashboard, "chart-layer-grad")) == [
        "grad_max/head.weight",
        "grad_norm/head.weight",
        "grad_std/head.weight",
    ]
    assert page.eval_on_selector("#chart-layer-grad", "div => div.layout.yaxis.type") == "log"
    wait_chart(dashboard, "chart-layer-means", 2 * n)
    assert sorted(trace_names(dashboard, "chart-layer-means")) == [
        "grad_mean/head.weight",
        "weight_mean/head.weight",
    ]
    assert page.eval_on_selector("#chart-layer-means", "div => div.layout.yaxis.type") == "linear"
    wait_chart(dashboard, "chart-layer-weight", n)
    assert trace_names(dashboard, "chart-layer-weight") == ["weight_norm/head.weight"]
    wait_chart(dashboard, "chart-layer-health", 2 * n)
    assert sorted(trace_names(dashboard, "chart-layer-health")) == [
        "grad_zero_frac/head.weight",
        "opt/eps_dominance/head.weight",
    ]
    ratio = wait_chart(dashboard, "chart-update-ratio", n)
    assert ratio["series"] == "1"
    # The band comes with the health report: the one the update-ratio rule judges by.
    page.wait_for_function(
        "() => (document.getElementById('chart-update-ratio').layout.shapes || []).length === 2"
    )
    layout = page.eval_on_selector(
        "#chart-update-ratio", "div => ({type: div.layout.yaxis.type, shapes: div.layout.shapes})"
    )
    assert layout["type"] == "log"
    band, line = layout["shapes"]
    assert (band["y0"], band["y1"]) == UPDATE_RATIO_BAND
    assert (line["y0"], line["y1"]) == (UPDATE_RATIO_TYPICAL, UPDATE_RATIO_TYPICAL)
    assert page.text_content("#ratio-band-label").startswith("(band 1e-5\u20261e-1, line 1e-3")
    # The band is drawn where the axis says (shapes on a log axis use data values).
    ys = page.eval_on_selector(
        "#chart-update-ratio",
        """div => {
            const ya = div._fullLayout.yaxis;
            return [ya.range, ya.l2p(Math.log10(1e-3)), ya.d2p(1e-3)];
        }""",
    )
    assert ys[1] == pytest.approx(ys[2])
    # eps dominance also has its trick panel.
    wait_chart(dashboard, "chart-epsdom", n)
    # The heatmap offers every per-layer statistic.
    stats = page.eval_on_selector_all("#heatmap-stat option", "os => os.map(o => o.value)")
    assert stats == [
        "grad_max",
        "grad_mean",
        "grad_norm",
        "grad_std",
        "grad_zero_frac",
        "update_ratio",
        "weight_mean",
        "weight_norm",
    ]
    dashboard.assert_clean()


def test_histograms_over_time_are_drawn_for_the_chosen_layer(dashboard, client):
    run_id = client.create_run(project="vision", name="hist")
    layers = ["conv.weight", "fc.weight"]
    client.declare_layers(run_id, layers)
    n = 12
    client.post_points(run_id, {f"grad_norm/{layer}": (steps(n), [1.0] * n) for layer in layers})
    bins = 8
    for layer, scale in (("conv.weight", 1.0), ("fc.weight", 2.0)):
        client.post_histograms(
            run_id,
            f"grad_hist/{layer}",
            steps(n),
            [-scale * (1 + s / n) for s in range(n)],
            [scale * (1 + s / n) for s in range(n)],
            [[float(k + 1) for k in range(bins)] for _ in range(n)],
            nonfinite=[0.0] * (n - 1) + [3.0],
        )
    dashboard.goto(f"/runs/{run_id}")
    wait_loaded(dashboard)
    page = dashboard.page
    hist = wait_chart(dashboard, "chart-hist", n)
    assert hist["name"] == "grad_hist/conv.weight"
    assert hist["total"] == str(n * sum(range(1, bins + 1)))
    assert hist["nonfinite"] == "1"
    trace = page.eval_on_selector(
        "#chart-hist",
        "div => ({type: div.data[0].type, x: div.data[0].x, ny: div.data[0].y.length})",
    )
    assert trace["type"] == "heatmap"
    assert trace["x"] == steps(n)
    page.select_option("#layer-select", "fc.weight")
    page.wait_for_function(
        "() => document.getElementById('chart-hist').dataset.name === 'grad_hist/fc.weight'"
    )
    # No weight histograms were logged: the view says so instead of failing.
    page.select_option("#hist-kind", "weight_hist")
    page.wait_for_function(
        "() => document.getElementById('chart-hist').dataset.name === 'weight_hist/fc.weight'"
    )
    assert chart_data(dashboard, "chart-hist")["points"] == "0"
    dashboard.assert_clean()


def test_zoom_rereads_the_window_at_full_resolution(dashboard, client):
    run_id = client.create_run(project="vision", name="long")
    n = 20_000
    values = [math.sin(s / 50) + 2 for s in range(n)]
    client.post_points(run_id, {"loss": (steps(n), values)})
    client.finish(run_id)
    dashboard.goto(f"/runs/{run_id}")
    wait_loaded(dashboard)
    page = dashboard.page
    coarse = int(chart_data(dashboard, "chart-loss")["points"])
    assert coarse <= 2000, "the first read is downsampled to the budget"
    in_window = page.eval_on_selector(
        "#chart-loss",
        "div => div.data[1].x.filter(x => x >= 10000 && x <= 10500).length",
    )
    assert in_window < 501

    page.evaluate("() => Plotly.relayout('chart-loss', {'xaxis.range': [10000, 10500]})")
    page.wait_for_function(
        "() => document.getElementById('chart-loss').dataset.window === '10000,10500'"
    )
    trace = page.eval_on_selector(
        "#chart-loss",
        """div => { const t = div.data[1]; const idx = [];
            t.x.forEach((x, i) => { if (x >= 10000 && x <= 10500) idx.push(i); });
            return {x: idx.map(i => t.x[i]), y: idx.map(i => t.y[i]),
                    sorted: t.x.every((x, i) => i === 0 || x > t.x[i - 1]),
                    first: t.x[0], last: t.x[t.x.length - 1]}; }""",
    )
    assert trace["x"] == list(range(10000, 10501)), "the window holds every raw point"
    assert trace["y"] == pytest.approx(values[10000:10501])
    assert trace["sorted"]
    assert (trace["first"], trace["last"]) == (0, n - 1), "outside the window stays drawn"
    assert page.eval_on_selector("#chart-loss", "div => div.layout.xaxis.range") == [10000, 10500]

    # A double-click (autorange) goes back to the whole series at the initial budget.
    page.evaluate("() => Plotly.relayout('chart-loss', {'xaxis.autorange': true})")
    page.wait_for_function(
        "() => document.getElementById('chart-loss').dataset.windowReads === '2'"
    )
    assert int(chart_data(dashboard, "chart-loss")["points"]) == coarse
    dashboard.assert_clean()


def _stream(client, run_id: str, first: int, count: int, errors: list[BaseException]) -> None:
    try:
        for batch in range(count):
            start = first + batch * 5
            client.post_points(
                run_id, {"loss": (steps(5, start), [float(s) for s in steps(5, start)])}
            )
            threading.Event().wait(0.05)
    except BaseException as exc:  # reported in the test thread
        errors.append(exc)


def loss_steps(dashboard) -> list[int]:
    return dashboard.page.eval_on_selector(
        "#chart-loss", "div => div.data.find(t => t.name === 'loss').x"
    )


def test_dropped_stream_resumes_without_gaps_or_duplicates(dashboard, client):
    run_id = client.create_run(project="vision", name="resume")
    client.post_points(run_id, {"loss": (steps(5), [0.0, 1.0, 2.0, 3.0, 4.0])})
    dashboard.goto(f"/runs/{run_id}")
    wait_loaded(dashboard)
    page = dashboard.page
    page.wait_for_function("() => document.getElementById('live-state').dataset.state === 'live'")
    errors: list[BaseException] = []
    # Drop the connection several times while points keep arriving.
    worker = threading.Thread(target=_stream, args=(client, run_id, 5, 20, errors), daemon=True)
    worker.start()
    for _ in range(4):
        threading.Event().wait(0.2)
        page.evaluate("() => window.__trickscope.dropLive()")
    worker.join(timeout=30)
    assert not errors, errors
    wait_chart(dashboard, "chart-loss", 105)
    assert loss_steps(dashboard) == steps(105)
    dashboard.assert_clean()


def test_stream_resumes_after_the_server_restarts(dashboard, client, live_server, tmp_path: Path):
    run_id = client.create_run(project="vision", name="restart")
    client.post_points(run_id, {"loss": (steps(5), [0.0] * 5)})
    dashboard.goto(f"/runs/{run_id}")
    wait_loaded(dashboard)
    page = dashboard.page
    page.wait_for_function("() => document.getElementById('live-state').dataset.state === 'live'")
    client.post_points(run_id, {"loss": (steps(5, 5), [0.0] * 5)})
    wait_chart(dashboard, "chart-loss", 10)

    port = int(live_server.url.rsplit(":", 1)[1])
    stop_server(live_server)
    page.wait_for_function(
        "() => document.getElementById('live-state').dataset.state === 'reconnecting'"
    )
    restarted = start_server(live_server.database_url, tmp_path / "server2.log", port=port)
    try:
        # Points stored while the page is still disconnected, then more once it is back.
        client.post_points(run_id, {"loss": (steps(5, 10), [0.0] * 5)})
        page.wait_for_function(
            "() => document.getElementById('live-state').dataset.state === 'live'",
            timeout=20_000,
        )
        client.post_points(run_id, {"loss": (steps(5, 15), [0.0] * 5)})
        wait_chart(dashboard, "chart-loss", 20)
        assert loss_steps(dashboard) == steps(20)
    finally:
        # The page's stream holds the server open: close the page's connections first.
        dashboard.page.evaluate("() => window.__trickscope.state.live?.close()")
        stop_server(restarted)
    # The killed stream and the refused reconnects log network errors, and so may a health
    # refresh that falls due while the server is down (the panel retries); nothing else may.
    unexpected = [
        e
        for e in dashboard.errors
        if not (
            ("/events?" in e or "/health" in e)
            and ("ERR_CONNECTION_REFUSED" in e or "ERR_INCOMPLETE" in e)
        )
    ]
    assert not unexpected, unexpected
    assert not dashboard.dialogs
