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
(c) Plotly bundle, with --compare-bundles: the cold load of (b) with the shipped partial bundle
    and with the full plotly.min.js of the ``plotly`` Python package, both handed to the page by
    the same request interception (so only the bundle differs), alternating, medians; and the
    size of the run's ``trickscope report`` file with each bundle inline.

    .venv/bin/python bench/browser.py [--points 100] [--repeats 5] [--compare-bundles]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peers import Client, start_trickscope  # noqa: E402

from trickscope.stats import GRAD_STATS, UPDATE_STAT, WEIGHT_STATS
from trickscope_cli.report_page import PLOTLY_BUNDLE, script_safe
from trickscope_server.config import default_web_dir
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


def full_bundle() -> bytes | None:
    """The full plotly.min.js of the ``plotly`` Python package (a dev dependency), if installed."""
    from importlib import resources

    try:
        return resources.files("plotly").joinpath("package_data", "plotly.min.js").read_bytes()
    except (ModuleNotFoundError, FileNotFoundError):
        return None


def cold_first_chart(browser, url: str, run_id: str, bundle: bytes) -> float:
    """ms to the first Plotly chart of a cold load, the page given ``bundle`` as its Plotly."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.route(
        "**/static/vendor/plotly-cartesian-*.min.js",
        lambda route: route.fulfill(body=bundle, content_type="text/javascript"),
    )
    page = context.new_page()
    page.goto(f"{url}/runs/{run_id}")
    page.wait_for_function(
        "() => window.__trickscope && window.__trickscope.loadedAt !== null", timeout=60_000
    )
    first = page.evaluate("() => window.__trickscope.firstChartAt")
    context.close()
    return first


def compare_bundles(browser, url: str, run_id: str, repeats: int) -> dict[str, float]:
    """Median cold first-Plotly-chart ms per bundle, the two alternating to share the noise."""
    bundles = {"partial": (default_web_dir() / PLOTLY_BUNDLE).read_bytes(), "full": full_bundle()}
    samples: dict[str, list[float]] = {name: [] for name in bundles}
    for i in range(repeats):
        for name in sorted(bundles, reverse=bool(i % 2)):
            samples[name].append(cold_first_chart(browser, url, run_id, bundles[name]))
    return {name: statistics.median(values) for name, values in samples.items()}


def report_sizes(url: str, run_id: str, tmp: Path) -> dict[str, int]:
    """Bytes of the run's report file as written, and with the full bundle inline instead."""
    output = tmp / "report.html"
    subprocess.run(
        [sys.executable, "-m", "trickscope_cli", "report", run_id, "-o", str(output), "--url", url],
        check=True,
        capture_output=True,
        timeout=300,
    )
    size = output.stat().st_size
    partial = script_safe((default_web_dir() / PLOTLY_BUNDLE).read_text(encoding="utf-8"))
    full = script_safe(full_bundle().decode("utf-8"))
    return {"partial": size, "full": size - len(partial.encode()) + len(full.encode())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=100)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--layers", type=int, default=200)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument(
        "--compare-bundles",
        action="store_true",
        help="also time the cold load with the full Plotly bundle (needs the plotly package)",
    )
    args = parser.parse_args()
    if args.compare_bundles and full_bundle() is None:
        parser.error("--compare-bundles needs the plotly package (pip install plotly)")
    bundles, sizes = {}, {}
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
                if args.compare_bundles:
                    bundles = compare_bundles(browser, server.url, run_id, args.repeats)
                    sizes = report_sizes(server.url, run_id, Path(tmp))
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

    for name, first in bundles.items():
        print(
            f"cold, {name} Plotly bundle (interception): first Plotly chart {first:.0f} ms "
            f"(median of {args.repeats}); report file {sizes[name] / 1e6:.2f} MB"
        )


if __name__ == "__main__":
    main()
