"""``trickscope report``: one self-contained HTML file of a run that opens offline.

The file holds Plotly (from the installed ``plotly`` package), the run's data as JSON in a
``<script type="application/json">`` block, and a small script that draws the charts. Every name
and config value from the run is untrusted: the JSON is escaped so that ``</script>`` in a name
cannot end the block, and the drawing script only ever sets ``textContent``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from importlib import resources
from pathlib import Path
from typing import Any

from trickscope_cli.errors import CliError

DEFAULT_URL = "http://127.0.0.1:8000"
HEATMAP_STATS = ("grad_norm", "update_ratio", "weight_norm")


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "report",
        help="write a self-contained HTML report of a run (opens offline)",
        description="Read a run over the REST API and write one HTML file with Plotly and the "
        "data inline: the health findings and checks, charts of every run-level series and "
        "per-layer heatmaps. The file needs "
        "no server and no network, so it can be mailed or attached to an issue.",
    )
    parser.add_argument("run_id", metavar="RUN_ID", help="the run's id (see the runs page)")
    parser.add_argument(
        "-o", "--output", type=Path, required=True, help="HTML file to write (e.g. run.html)"
    )
    parser.add_argument(
        "--url",
        help=f"server to read from (default: TRICKSCOPE_URL, else {DEFAULT_URL}); a server "
        "with authentication on reads TRICKSCOPE_TOKEN (a read token is enough)",
    )
    parser.add_argument(
        "--points",
        type=int,
        default=2000,
        help="points per series; longer series are downsampled keeping extremes (default 2000)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    url = (args.url or os.environ.get("TRICKSCOPE_URL") or DEFAULT_URL).rstrip("/")
    if args.points < 3:
        raise CliError("--points must be at least 3")
    data = collect(url, args.run_id, points=args.points)
    html = render(data)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(html, encoding="utf-8")
    size = len(html.encode()) / 1e6
    print(f"trickscope: wrote {args.output} ({size:.1f} MB)", flush=True)
    return 0


def _get(url: str, path: str, params: dict[str, Any] | None = None) -> Any:
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    headers = {"Accept": "application/json"}
    token = os.environ.get("TRICKSCOPE_TOKEN")
    if token:  # a server with authentication on: the same token the agent sends
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(f"{url}/api/v1{path}{query}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("detail") or exc.reason
        except (ValueError, AttributeError):
            detail = exc.reason
        raise CliError(f"{url} answered {exc.code} for {path}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise CliError(f"could not reach {url}: {exc}") from None


def _is_layer_series(name: str, layers: set[str]) -> bool:
    at = name.find("/")
    while at > 0:
        if name[at + 1 :] in layers:
            return True
        at = name.find("/", at + 1)
    return False


def collect(url: str, run_id: str, *, points: int) -> dict[str, Any]:
    """Everything the report draws, read over the REST API."""
    quoted = urllib.parse.quote(run_id, safe="")
    run = _get(url, f"/runs/{quoted}")
    series = _get(url, f"/runs/{quoted}/series")["series"]
    layers = set(run.get("layers") or [])
    names = [s["name"] for s in series if not _is_layer_series(s["name"], layers)]
    reads = [
        _get(url, f"/runs/{quoted}/points", {"name": name, "points": points}) for name in names
    ]
    stats = {s["name"].split("/", 1)[0] for s in series if _is_layer_series(s["name"], layers)}
    heatmaps = [
        _get(url, f"/runs/{quoted}/heatmap", {"stat": stat, "points": min(points, 400)})
        for stat in HEATMAP_STATS
        if stat in stats
    ]
    health = _get(url, f"/runs/{quoted}/health")
    return {
        "run": run,
        "health": {
            "findings": health.get("findings") or [],
            "checks": health.get("checks") or [],  # older servers list findings only
        },
        "series": [
            {"name": r["name"], "step": r["step"], "value": r["value"], "total": r["total"]}
            for r in reads
        ],
        "heatmaps": heatmaps,
        "source": url,
    }


def plotly_js() -> str:
    """``plotly.min.js`` from the installed ``plotly`` package."""
    path = resources.files("plotly").joinpath("package_data", "plotly.min.js")
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CliError("plotly.min.js is missing from the installed plotly package") from None


def script_safe(text: str) -> str:
    """Text that can sit inside a ``<script>`` element without ending it early."""
    text = re.sub(r"</(script)", r"<\\/\1", text, flags=re.IGNORECASE)
    return text.replace("<!--", "<\\!--")


def json_for_html(data: Any) -> str:
    """JSON with ``<``, ``>``, ``&`` and the JS line separators escaped: inert inside HTML."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False)
    for raw, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(raw, escaped)
    return text


# The drawing script: only textContent and Plotly, no innerHTML, no string-built markup.
_DRAW = r"""
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("trickscope-data").textContent);
  var TOKENS = { NaN: NaN, Infinity: Infinity, "-Infinity": -Infinity };
  function num(v) {
    if (v === null || v === undefined) return null;
    if (typeof v === "number") return v;
    return Object.prototype.hasOwnProperty.call(TOKENS, v) ? TOKENS[v] : Number(v);
  }
  function finite(v) { var n = num(v); return n === null || !isFinite(n) ? null : n; }
  function esc(t) { return String(t).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g,
      "&gt;"); }
  function el(tag, text, cls) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }
  function show(v) { return v !== null && typeof v === "object" ? JSON.stringify(v) : String(v); }
  var run = data.run;
  document.title = (run.name || run.id) + " \u00b7 trickscope report";
  document.getElementById("run-name").textContent = run.name || run.id;
  var meta = document.getElementById("meta");
  [["project", run.project], ["status", run.status], ["run id", run.id],
   ["started", run.started_at || run.created_at], ["ended", run.ended_at || "\u2014"],
   ["tags", (run.tags || []).join(", ") || "\u2014"], ["source",
       data.source]].forEach(function (kv) {
    var row = el("div"); row.appendChild(el("dt", kv[0])); row.appendChild(el("dd",
        kv[1])); meta.appendChild(row);
  });
  function table(id, object) {
    var t = document.getElementById(id);
    var keys = Object.keys(object || {}).sort();
    if (!keys.length) { var r = el("tr"); r.appendChild(el("td",
        "none recorded")); t.appendChild(r); }
    keys.forEach(function (k) {
      var r = el("tr"); r.appendChild(el("th", k)); r.appendChild(el("td",
          show(object[k]))); t.appendChild(r);
    });
  }
  // Health: the findings, most severe first, then which checks ran and why others were skipped.
  var health = data.health || { findings: [], checks: [] };
  var list = document.getElementById("findings");
  if (!health.findings.length) list.appendChild(el("li", "No findings.", "finding none"));
  health.findings.forEach(function (f) {
    var sev = ["error", "warning", "info"].indexOf(f.severity) >= 0 ? f.severity : "info";
    var item = el("li", null, "finding sev-" + sev);
    item.dataset.check = String(f.check || "");
    var head = el("div");
    head.appendChild(el("span", sev, "sev"));
    head.appendChild(el("strong", f.title || f.check));
    var where = [];
    if (typeof f.step === "number") where.push("step " + f.step);
    if (f.layer) where.push("layer " + f.layer);
    if (f.source === "agent") where.push("found in the training process");
    if (where.length) head.appendChild(el("span", " \u00b7 " + where.join(" \u00b7 "), "where"));
    item.appendChild(head);
    item.appendChild(el("p", f.why || f.detail || ""));
    if (f.remedy) item.appendChild(el("p", "Try: " + f.remedy, "remedy"));
    var evidence = f.evidence && Object.keys(f.evidence).length ? JSON.stringify(f.evidence) : "";
    if (evidence) item.appendChild(el("code", evidence, "evidence"));
    list.appendChild(item);
  });
  var checks = document.getElementById("checks");
  health.checks.forEach(function (c) {
    var r = el("tr");
    r.appendChild(el("th", c.id));
    r.appendChild(el("td", c.title));
    r.appendChild(el("td", c.status === "ran" ? "ran \u00b7 " + c.findings + " finding(s)" :
        "skipped: " + (c.reason || "")));
    r.dataset.status = String(c.status);
    checks.appendChild(r);
  });
  document.getElementById("health-summary").textContent = "Health \u00b7 " +
      health.findings.length + " finding(s), " +
      health.checks.filter(function (c) { return c.status === "ran"; }).length + " of " +
      health.checks.length + " checks ran";
  table("config", run.config);
  var ranks = {};
  Object.keys(run.ranks || {}).forEach(function (k) { ranks["rank " + k] = run.ranks[k]; });
  table("system", Object.assign({}, run.system, ranks));
  var families = {};
  var order = [];
  data.series.forEach(function (s) {
    // A distributed run's per-rank series: one chart per quantity, every rank in it.
    var perRank = /^rank\/\d+\/(.+)$/.exec(s.name);
    var slash = s.name.indexOf("/");
    var fam = perRank ? "per rank: " + perRank[1] : slash > 0 ? s.name.slice(0, slash) : s.name;
    if (!families[fam]) { families[fam] = []; order.push(fam); }
    families[fam].push(s);
  });
  order.sort(function (a, b) { return a === "loss" ? -1 : b === "loss" ? 1 : a.localeCompare(b); });
  var grid = document.getElementById("charts");
  var drawn = 0;
  var warmup = run.config && run.config.tricks && run.config.tricks.schedule &&
      run.config.tricks.schedule.warmup_steps;
  order.forEach(function (fam, i) {
    var card = el("section", null, "card");
    card.appendChild(el("h2", fam));
    var div = el("div", null, "chart");
    div.id = "chart-" + i;
    card.appendChild(div);
    grid.appendChild(card);
    var traces = families[fam].map(function (s) {
      return { type: "scatter", mode: s.step.length < 50 ? "lines+markers" : "lines",
          name: esc(s.name),
               x: s.step, y: s.value.map(finite), connectgaps: false };
    });
    var layout = { height: 300, margin: { l: 56, r: 16, t: 16, b: 40 }, showlegend: true,
                   legend: { orientation: "h", y: -0.15 }, hovermode: "x unified" };
    if (fam === "lr" && typeof warmup === "number" && warmup > 0) {
      layout.shapes = [{ type: "rect", xref: "x", yref: "paper", x0: 0, x1: warmup, y0: 0, y1: 1,
                         fillcolor: "rgba(37,99,235,0.08)", line: { width: 0 }, layer: "below" }];
    }
    Plotly.newPlot(div, traces, layout, { displaylogo: false, responsive: true });
    div.dataset.points = String(traces.reduce(function (n, t) { return n + t.x.length; }, 0));
    drawn += 1;
  });
  var heat = document.getElementById("heatmaps");
  data.heatmaps.forEach(function (h, i) {
    var card = el("section", null, "card wide");
    card.appendChild(el("h2", h.stat + " per layer (log10)"));
    var div = el("div", null, "chart");
    div.id = "heatmap-" + i;
    card.appendChild(div);
    heat.appendChild(card);
    var z = h.z.map(function (row) {
      return row.map(function (v) { var n = finite(v); return n !== null && n > 0 ?
          Math.log10(n) : null; });
    });
    Plotly.newPlot(div, [{ type: "heatmap", x: h.step, y: h.layers.map(esc), z: z,
        colorscale: "Viridis" }],
      { height: Math.max(260, h.layers.length * 10 + 100), margin: { l: 60, r: 16, t: 16, b: 40 },
        yaxis: { type: "category", autorange: "reversed", automargin: true, dtick: 1 } },
      { displaylogo: false, responsive: true });
    div.dataset.points = String(h.layers.length * h.step.length);
    drawn += 1;
  });
  document.body.dataset.charts = String(drawn);
  document.body.dataset.loaded = "true";
})();
"""

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="trickscope report">
<title>trickscope report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 0; background: #f5f6f8; color: #1f2329; }}
main {{ max-width: 1500px; margin: 0 auto; padding: 1rem 1.5rem 3rem; }}
h1 {{ font-size: 1.5rem; word-break: break-word; }}
h2 {{ font-size: 0.95rem; margin: 0 0 0.25rem; word-break: break-word; }}
.meta {{ display: flex; flex-wrap: wrap; gap: 0.4rem 2rem; }}
.meta dt {{ font-size: 0.75rem; color: #6b7280; text-transform: uppercase; }}
.meta dd {{ margin: 0; word-break: break-all; }}
table {{ border-collapse: collapse; font-size: 0.85rem; }}
th, td {{ text-align: left; padding: 0.2rem 0.8rem 0.2rem 0; border-bottom: 1px solid #e3e6ea;
  font-family: ui-monospace, monospace; word-break: break-word; vertical-align: top; }}
th {{ color: #6b7280; font-weight: 500; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(min(100%, 520px), 1fr));
  gap: 1rem; margin-top: 1rem; }}
.card {{ background: #fff; border: 1px solid #e3e6ea; border-radius: 8px; padding: 0.75rem; }}
.wide {{ grid-column: 1 / -1; }}
details {{ margin-top: 0.75rem; }}
.health {{ margin-top: 1rem; }}
#findings {{ list-style: none; padding: 0; margin: 0; }}
.finding {{ border-left: 4px solid #9ca3af; padding: 0.3rem 0.6rem; margin: 0.4rem 0; }}
.finding p {{ margin: 0.2rem 0; font-size: 0.85rem; }}
.sev-error {{ border-color: #dc2626; }} .sev-warning {{ border-color: #d97706; }}
.sev-info {{ border-color: #2563eb; }}
.sev {{ text-transform: uppercase; font-size: 0.7rem; margin-right: 0.5rem; color: #6b7280; }}
.where {{ color: #6b7280; font-size: 0.8rem; }}
.evidence {{ font-size: 0.75rem; color: #4b5563; word-break: break-all; }}
</style>
</head>
<body>
<main>
<p style="color:#6b7280;font-size:0.8rem">trickscope report · generated offline copy</p>
<h1 id="run-name"></h1>
<dl id="meta" class="meta"></dl>
<section class="card health"><h2 id="health-summary">Health</h2><ul id="findings"></ul>
<details><summary>Checks</summary><table id="checks"></table></details></section>
<details open><summary>Config</summary><table id="config"></table></details>
<details><summary>System</summary><table id="system"></table></details>
<div id="charts" class="grid"></div>
<div id="heatmaps" class="grid"></div>
</main>
<script type="application/json" id="trickscope-data">{data}</script>
<script>{plotly}</script>
<script>{draw}</script>
</body>
</html>
"""


def render(data: dict[str, Any]) -> str:
    """The report's HTML: Plotly, the data and the drawing script, all inline."""
    return _PAGE.format(
        data=json_for_html(data), plotly=script_safe(plotly_js()), draw=script_safe(_DRAW)
    )
