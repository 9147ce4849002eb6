"""The HTML of a ``trickscope report`` file: the run page itself, made to run from one file.

The report draws with the dashboard's own modules (``web/js/run.js`` and what it imports), so it
shows every panel the run page shows and cannot drift from it. A file opened from disk cannot
load ES modules by path, so the modules travel as text in a JSON block; a small classic script
turns each into a ``blob:`` URL, its dependencies first, with its ``"./name.js"`` imports pointed
at their blobs, and imports the entry. Every page module that imports ``./api.js`` gets
``report-api.js`` instead: the same calls, answered from the data written inline.

Everything from the run is untrusted: both JSON blocks escape ``<``, ``>`` and ``&``, so a
``</script>`` in a series name cannot end its block, and the page sets text with ``textContent``.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

from trickscope_cli.errors import CliError
from trickscope_server.config import default_web_dir

ENTRY = "run.js"
# The inline data source stands in for the REST client; it imports the real one for the rest.
ALIASES = {"api.js": "report-api.js"}
# The vendored partial Plotly bundle, relative to the dashboard's files (web/vendor/README.md).
PLOTLY_BUNDLE = Path("vendor") / "plotly-cartesian.min.js"
_IMPORT = re.compile(r'\b(?:from|import)\s*"\./([\w.-]+\.js)"')

# Runs in the file (no server, no CSP): builds the blob URLs and starts the page's entry module.
LOADER = r"""
(function () {
  "use strict";
  var bundle = JSON.parse(document.getElementById("trickscope-modules").textContent);
  var urls = {};
  function urlOf(name) {
    if (urls[name]) return urls[name];
    var module = bundle.modules[name];
    var source = module.source.replace(/(\b(?:from|import)\s*)"\.\/([\w.-]+\.js)"/g,
      function (match, keyword, spec) {
        return keyword + JSON.stringify(urlOf(module.imports[spec]));
      });
    urls[name] = URL.createObjectURL(new Blob([source], { type: "text/javascript" }));
    return urls[name];
  }
  import(urlOf(bundle.entry)).catch(function (error) {
    var banner = document.getElementById("error-banner");
    banner.textContent = "The report could not start: " + error;
    banner.hidden = false;
  });
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
{css}
</style>
</head>
<body data-run-id="{run_id}" data-report="true">
<header class="topbar">
<span class="brand">trickscope</span>
<nav><span class="muted small-text" id="report-source">report · offline copy of {source}
</span></nav>
</header>
{main}
<script type="application/json" id="trickscope-data">{data}</script>
<script type="application/json" id="trickscope-modules">{modules}</script>
<script>{plotly}</script>
<script>{loader}</script>
</body>
</html>
"""


def web_dir() -> Path:
    """The dashboard's files: packaged with the server, or the checkout's ``web/``."""
    path = default_web_dir()
    if not (path / "js" / ENTRY).is_file():
        raise CliError(f"the run page's modules are missing from {path}")
    return path


def module_bundle(js_dir: Path, entry: str = ENTRY) -> dict[str, Any]:
    """``{"entry", "modules": {name: {"source", "imports": {spec: name}}}}`` of ``entry``'s graph.

    Raises CliError on a missing module or an import cycle (the loader builds dependencies
    first, so a cycle could never load).
    """
    modules: dict[str, dict[str, Any]] = {}
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in modules:
            return
        if name in visiting:
            raise CliError(f"the run page's modules import each other in a cycle at {name}")
        visiting.add(name)
        path = js_dir / name
        if not path.is_file():
            raise CliError(f"the run page's module {name} is missing from {js_dir}")
        source = path.read_text(encoding="utf-8")
        imports = {}
        for spec in dict.fromkeys(_IMPORT.findall(source)):
            target = spec if name == ALIASES.get(spec) else ALIASES.get(spec, spec)
            imports[spec] = target
            visit(target)
        visiting.discard(name)
        modules[name] = {"source": source, "imports": imports}

    visit(entry)
    return {"entry": entry, "modules": modules}


def plotly_js(web: Path) -> str:
    """The dashboard's vendored Plotly bundle (the one the server serves, see
    ``trickscope_server.api.pages.PLOTLY_BUNDLE``): only the trace types the pages draw."""
    path = web / PLOTLY_BUNDLE
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CliError(f"the Plotly bundle is missing from the dashboard ({path})") from None


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


def _main_of(run_html: str) -> str:
    """The run page's ``<main>`` element (the header's links and scripts need a server)."""
    found = re.search(r"<main>.*?</main>", run_html, re.S)
    if found is None:
        raise CliError("run.html has no <main> element")
    return found.group(0)


def render(data: dict[str, Any]) -> str:
    """The report's HTML: the run page's markup, styles and modules, Plotly and the data."""
    web = web_dir()
    css = (web / "app.css").read_text(encoding="utf-8").replace("</", "<\\/")
    return _PAGE.format(
        css=css,
        run_id=html.escape(str(data["run"]["id"]), quote=True),
        source=html.escape(str(data.get("source", ""))),
        main=_main_of((web / "run.html").read_text(encoding="utf-8")),
        data=json_for_html(data),
        modules=json_for_html(module_bundle(web / "js")),
        plotly=script_safe(plotly_js(web)),
        loader=script_safe(LOADER),
    )
