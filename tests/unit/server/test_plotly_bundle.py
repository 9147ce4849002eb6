"""The vendored Plotly partial bundle: served from the package under its version, cached for a
year, named the same by every page that loads it, and the file its README's checksum names."""

from __future__ import annotations

import hashlib
import re

import pytest
from fastapi.testclient import TestClient

from trickscope_cli.report_page import PLOTLY_BUNDLE as REPORT_BUNDLE
from trickscope_server.api.pages import PLOTLY_BUNDLE, plotly_bundle, plotly_version
from trickscope_server.app import create_app
from trickscope_server.config import Settings, default_web_dir

pytestmark = pytest.mark.timeout(60)

WEB = default_web_dir()
# Everything that names the bundle's URL: the pages' <script>/<link> and the on-demand loader.
REFERENCES = ("run.html", "compare.html", "js/plotly-loader.js")


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = create_app(Settings(database_url="sqlite://", web_dir=WEB))
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as test_client:
        yield test_client


def test_the_bundle_is_served_under_its_version_with_a_year_of_caching(client) -> None:
    version = plotly_version(plotly_bundle(WEB))
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    response = client.get(f"/static/vendor/plotly-cartesian-{version}.min.js")
    assert response.status_code == 200
    assert response.content == (WEB / PLOTLY_BUNDLE).read_bytes()
    assert response.headers["content-type"].startswith("text/javascript")
    assert "max-age=31536000" in response.headers["cache-control"]
    assert "immutable" in response.headers["cache-control"]
    # Another version's URL is not this bundle: a cached page of another release must not get it.
    stale = client.get("/static/vendor/plotly-cartesian-0.0.1.min.js")
    assert stale.status_code == 404
    assert stale.headers["content-type"].startswith("application/problem+json")


def test_every_page_names_the_shipped_version() -> None:
    url = f"/static/vendor/plotly-cartesian-{plotly_version(plotly_bundle(WEB))}.min.js"
    for name in REFERENCES:
        text = (WEB / name).read_text(encoding="utf-8")
        assert re.findall(r"/static/vendor/plotly[^\"']*", text) == [url], name
    assert REPORT_BUNDLE == PLOTLY_BUNDLE  # the report inlines the bundle the server serves


def test_the_readme_names_the_bundle_it_describes() -> None:
    vendor = WEB / "vendor"
    readme = (vendor / "README.md").read_text(encoding="utf-8")
    digest = hashlib.sha256((WEB / PLOTLY_BUNDLE).read_bytes()).hexdigest()
    assert f"`{digest}`" in readme
    assert f"version **{plotly_version(plotly_bundle(WEB))}**" in readme
    assert "MIT License" in (vendor / "LICENSE").read_text(encoding="utf-8")


# `type:` values in web/js that are no trace: DOM elements, shapes and axes.
NOT_TRACES = {"button", "checkbox", "text", "number", "line", "rect", "circle", "path"}
NOT_TRACES |= {"linear", "log", "date", "category", "multicategory"}


def test_the_dashboard_draws_only_trace_types_the_bundle_registers() -> None:
    traces = set()
    for path in (WEB / "js").glob("*.js"):
        traces.update(re.findall(r'\btype: "(\w+)"', path.read_text(encoding="utf-8")))
    traces -= NOT_TRACES
    assert traces >= {"scatter", "heatmap"}
    bundle = (WEB / PLOTLY_BUNDLE).read_text(encoding="utf-8")
    registered = set(re.findall(r'moduleType:"trace",name:"(\w+)"', bundle))
    assert "scatter" in registered and "scattergl" not in registered  # a partial bundle
    assert traces <= registered, f"{traces - registered}: the partial bundle lacks these traces"
