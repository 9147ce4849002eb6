"""Dashboard benchmarks in headless Debian Chromium (Playwright), timestamps taken in the page.

(a) Live latency: a point is POSTed over HTTP with its wall time noted just before the request;
    the run page records (performance.timeOrigin + performance.now(), in the animation frame
    after Plotly.extendTraces drew it) when the loss chart first holds that step. Same machine,
    same clock. The agent's batching (flush every <= 0.5 s by default) comes on top of this.
(b) Page load: a run with 200 layers x 11 per-layer statistics x 1,000 steps (+ loss, LR, grad
    norm): time from navigation start to the first chart on screen (the SVG preview drawn
    while Plotly still loads, or a Plotly chart), to the first Plotly (interactive) chart, and
    to every initial chart drawn, cold (fresh browser context) and warm (reload in the same
    context). Medians.

    .venv/bin/python bench/browser.py [--points 100] [--repeats 5]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peers import Client, start_trickscope  # noqa: E402

from trickscope.stats import GRAD_STATS, UPDATE_STAT, WEIGHT_STATS
from trickscope_wire import (
    LayersDeclare,
    PointBatch,
    RunCreate,
    SeriesColumns,
    dumps,
    encode_f64,
    encode_i64,
)

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
STATS = [*GRAD_STATS, *WEIGHT_STATS, UPDATE_STAT]  # every per-layer family the agent sends

WATCH = """() => {
  window.__drawn = {};
  const div = document.getElementById('chart-loss');
  new MutationObserver(() => {
    const trace = (div.data || []).find(t => t.name === 'loss');
    if (!trace || !trace.x.length) return;
    const step = trace.x[trace.x.length - 1];
    if (step in window.__drawn) return;
    window.__drawn[step] = null;
    requestAnimationFrame(() => {
      window.__drawn[step] = performance.timeOrigin + performance.now();
    });
  }).observe(div, {attributes: true, attributeFilter: ['data-points']});
}"""


def put_run(client: Client, name: str) -> str:
    run_id = uuid.uuid4().hex
    client.request("PUT", f"/api/v1/runs/{run_id}", dumps(RunCreate(project="bench", name=name)))
    return run_id


def post(client: Client, run_id: str, series: dict[str, tuple[list[int], list[float]]]) -> None:
    now = time.time()
    columns = [
        SeriesColumns(name, encode_i64(s), encode_f64(v), encode_f64([now] * len(s)))
        for name, (s, v) in series.items()
    ]
    body = dumps(PointBatch(batch_id=uuid.uuid4().hex, series=columns))
    client.request("POST", f"/api/v1/runs/{run_id}/points", body)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def live_latency(browser, url: str, points: int, interval: float) -> dict[str, float]:
    client = Client(url)
    run_id = put_run(client, "live-latency")
    post(client, run_id, {"loss": ([0], [1.0])})
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{url}/runs/{run_id}")
    page.wait_for_function("() => document.getElementById('live-state').dataset.state === 'live'")
    page.evaluate(WATCH)
    sent: dict[int, float] = {}
    for step in range(1, points + 1):
        sent[step] = time.time() * 1000
        post(client, run_id, {"loss": ([step], [1.0 / step])})
        time.sleep(interval)
    page.wait_for_function(f"() => window.__drawn[{points}] > 0", timeout=30_000)
    drawn = page.evaluate("() => window.__drawn")
    context.close()
    latencies = [drawn[str(s)] - sent[s] for s in sent if drawn.get(str(s))]
    return {
        "n": len(latencies),
        "p50": statistics.median(latencies),
        "p95": percentile(latencies, 0.95),
        "max": max(latencies),
    }


def big_run(url: str, layers: int, steps: int) -> str:
    client = Client(url)
    run_id = put_run(client, "200-layers")
    names = [
        f"blocks.{i // 4}.{['attn.qkv', 'attn.proj', 'mlp.fc1', 'mlp.fc2'][i % 4]}.weight"
        for i in range(layers)
    ]
    client.request("PUT", f"/api/v1/runs/{run_id}/layers", dumps(LayersDeclare(layers=names)))
    xs = list(range(steps))
    post(
        client,
        run_id,
        {
            "loss/train": (xs, [2.0 / (1 + s / 100) for s in xs]),
            "lr/group0": (xs, [1e-3] * steps),
            "grad_norm/total": (xs, [1.0] * steps),
        },
    )
    for stat in STATS:
        post(
            client,
            run_id,
            {
                f"{stat}/{name}": (xs, [1e-3 * (1 + i % 7) for _ in xs])
                for i, name in enumerate(names)
            },
        )
    return run_id


def page_load(browser, url: str, run_id: str, repeats: int) -> dict[str, dict[str, float]]:
    hooks = "firstShownAt", "firstChartAt", "loadedAt"
    marks = "() => [" + ", ".join(f"window.__trickscope.{hook}" for hook in hooks) + "]"
    ready = "() => window.__trickscope && window.__trickscope.loadedAt !== null"
    samples: dict[str, dict[str, list[float]]] = {
        kind: {hook: [] for hook in hooks} for kind in ("cold", "warm")
    }
    for _ in range(repeats):
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        for kind in ("cold", "warm"):  # a fresh context, then a reload with its caches
            if kind == "cold":
                page.goto(f"{url}/runs/{run_id}")
            else:
                page.reload()
            page.wait_for_function(ready, timeout=60_000)
            for hook, value in zip(hooks, page.evaluate(marks), strict=True):
                samples[kind][hook].append(value)
        context.close()
    return {
        kind: {hook: statistics.median(values) for hook, values in by_hook.items()}
        for kind, by_hook in samples.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=100)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--layers", type=int, default=200)
    parser.add_argument("--steps", type=int, default=1000)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        server = start_trickscope(f"sqlite:///{Path(tmp) / 'bench.db'}")
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=CHROMIUM, headless=True, args=ARGS
                )
                live = live_latency(browser, server.url, args.points, args.interval)
                run_id = big_run(server.url, args.layers, args.steps)
                load = page_load(browser, server.url, run_id, args.repeats)
                browser.close()
        finally:
            server.stop()
    print(f"machine: {platform.machine()}, {platform.python_version()}, Chromium headless")
    print(
        f"live HTTP POST -> point drawn ({live['n']} points, one every {args.interval}s): "
        f"p50 {live['p50']:.0f} ms, p95 {live['p95']:.0f} ms, max {live['max']:.0f} ms"
    )
    for kind in ("cold", "warm"):
        times = load[kind]
        print(
            f"run page, {args.layers} layers x {len(STATS)} stats x {args.steps} steps, {kind}: "
            f"first chart shown {times['firstShownAt']:.0f} ms, first Plotly chart "
            f"{times['firstChartAt']:.0f} ms, all initial charts {times['loadedAt']:.0f} ms "
            f"(median of {args.repeats})"
        )


if __name__ == "__main__":
    main()
