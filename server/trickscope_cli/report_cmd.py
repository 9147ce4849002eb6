"""``trickscope report``: one self-contained HTML file of a run that opens offline.

The file is the run page itself (report_page.py): its markup, styles and modules, with Plotly
and the run's data inline. The data are what the page would read over REST, read here once:
every series, the per-layer statistics, heatmaps and histograms, and the health report.
"""

from __future__ import annotations

import argparse
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from trickscope_cli.errors import CliError
from trickscope_cli.progress import progress_bar
from trickscope_cli.report_page import json_for_html, render, script_safe

__all__ = ["add_parser", "collect", "json_for_html", "render", "run", "script_safe"]

DEFAULT_URL = "http://127.0.0.1:8000"
HEATMAP_POINTS = 400  # step columns of a heatmap, as the run page reads them
READERS = 8  # concurrent REST reads


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "report",
        help="write a self-contained HTML report of a run (opens offline)",
        description="Read a run over the REST API and write one HTML file that is the run page "
        "with Plotly and the data inline: the health findings and checks, every overview chart "
        "and trick panel, the per-layer heatmaps, each layer's statistics and histograms, and "
        "the other metrics. The file needs no server and no network, so it can be mailed or "
        "attached to an issue.",
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
    parser.add_argument(
        "--layer-points",
        type=int,
        default=200,
        help="points per per-layer series (each layer's statistics; default 200)",
    )
    parser.add_argument(
        "--hist-points",
        type=int,
        default=100,
        help="histograms (steps) per layer and kind in the histogram-over-time view (default 100)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    url = (args.url or os.environ.get("TRICKSCOPE_URL") or DEFAULT_URL).rstrip("/")
    if min(args.points, args.layer_points, args.hist_points) < 3:
        raise CliError("--points, --layer-points and --hist-points must be at least 3")
    data = collect(
        url,
        args.run_id,
        points=args.points,
        layer_points=args.layer_points,
        hist_points=args.hist_points,
    )
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


def _layer_stat(name: str, layers: set[str]) -> str | None:
    """The statistic of a per-layer series (``grad_norm/<layer>`` -> ``grad_norm``), else None."""
    if name == "grad_norm/total":
        return None
    at = name.find("/")
    while at > 0:
        if name[at + 1 :] in layers:
            return name[:at]
        at = name.find("/", at + 1)
    return None


def collect(
    url: str,
    run_id: str,
    *,
    points: int,
    layer_points: int = 200,
    hist_points: int = 100,
) -> dict[str, Any]:
    """Everything the run page reads of a run, read over the REST API with a progress bar.

    Returns ``{run, series, points: {name: read}, heatmaps: {stat: read},
    histograms: {name: read}, health, source, written_at}``: report-api.js answers the page's
    calls from it.
    """
    quoted = urllib.parse.quote(run_id, safe="")
    base = f"/runs/{quoted}"
    run = _get(url, base)
    series = _get(url, f"{base}/series")["series"]
    hist_names = _get(url, f"{base}/histograms/names").get("names") or []
    layers = set(run.get("layers") or [])
    reads: dict[tuple[str, str], Callable[[], Any]] = {}
    stats = set()
    for item in series:
        name = item["name"]
        stat = _layer_stat(name, layers)
        if stat is not None and "/" not in stat:
            stats.add(stat)
        budget = points if stat is None else layer_points
        reads["points", name] = lambda name=name, budget=budget: _get(
            url, f"{base}/points", {"name": name, "points": budget}
        )
    for stat in sorted(stats):
        reads["heatmaps", stat] = lambda stat=stat: _get(
            url, f"{base}/heatmap", {"stat": stat, "points": min(points, HEATMAP_POINTS)}
        )
    for name in hist_names:
        reads["histograms", name] = lambda name=name: _get(
            url, f"{base}/histograms", {"name": name, "points": hist_points}
        )
    reads["health", ""] = lambda: _get(url, f"{base}/health")
    out: dict[str, Any] = {"points": {}, "heatmaps": {}, "histograms": {}}
    with (
        progress_bar(total=len(reads), desc=f"report {run_id[:8]}", unit="read") as bar,
        ThreadPoolExecutor(max_workers=READERS) as pool,
    ):
        futures = {key: pool.submit(read) for key, read in reads.items()}
        for (kind, name), future in futures.items():
            answer = future.result()
            if kind == "health":
                out["health"] = answer
            else:
                out[kind][name] = answer
            bar.update(1)
    health = out.pop("health")
    return {
        "run": run,
        "series": series,
        **out,
        "health": {
            **health,
            "findings": health.get("findings") or [],
            "checks": health.get("checks") or [],  # older servers list findings only
        },
        "source": url,
        "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
