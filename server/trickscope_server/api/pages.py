"""The dashboard's pages and static files, the vendored Plotly bundle and Swagger UI.

Every page carries the Content-Security-Policy of ``security/headers.py``: scripts, styles and
fetches are same-origin only, so nothing is loaded from a CDN.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, RedirectResponse

from trickscope_server.api.deps import RunId, SettingsDep
from trickscope_server.errors import NotFoundError
from trickscope_server.security import Authenticator
from trickscope_server.security.headers import PAGE_CSP

router = APIRouter(include_in_schema=False)

CSP = PAGE_CSP
_PAGE_HEADERS = {"Content-Security-Policy": CSP, "Cache-Control": "no-cache"}
# The two Swagger UI files /docs needs, from the swagger-ui-py package.
_SWAGGER_FILES = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css"}


# The vendored partial bundle (web/vendor/README.md): only the trace types the dashboard draws.
PLOTLY_BUNDLE = Path("vendor") / "plotly-cartesian.min.js"
_PLOTLY_VERSION = re.compile(rb"plotly\.js \(cartesian - minified\) v(\d+\.\d+\.\d+)")


def plotly_bundle(web_dir: Path) -> Path:
    """The Plotly bundle shipped with the dashboard's files (no CDN, no network)."""
    return web_dir / PLOTLY_BUNDLE


@functools.lru_cache(maxsize=4)
def plotly_version(bundle: Path) -> str:
    """The plotly.js version in the bundle's header: the pages' URL names it, so that a year of
    caching can never serve a browser the bundle of an older trickscope."""
    try:
        with bundle.open("rb") as file:
            header = file.read(512)
    except FileNotFoundError:
        raise NotFoundError(f"the Plotly bundle is missing from the dashboard ({bundle})") from None
    found = _PLOTLY_VERSION.search(header)
    if found is None:
        raise NotFoundError(f"{bundle} has no plotly.js cartesian version header")
    return found.group(1).decode()


def _page(web_dir: Path, name: str) -> FileResponse:
    path = web_dir / name
    if not path.is_file():
        raise NotFoundError(f"dashboard page {name} is missing from web_dir {str(web_dir)!r}")
    return FileResponse(path, media_type="text/html", headers=_PAGE_HEADERS)


@router.get("/")
def index(settings: SettingsDep) -> FileResponse:
    """The runs page."""
    return _page(settings.web_dir, "index.html")


@router.get("/runs/{run_id}")
def run_page(run_id: RunId, settings: SettingsDep) -> FileResponse:
    """The page of one run (the page reads the id from its URL)."""
    return _page(settings.web_dir, "run.html")


@router.get("/compare")
def compare_page(settings: SettingsDep) -> FileResponse:
    """Several runs overlaid (the page reads ``runs=a,b,...`` from its URL)."""
    return _page(settings.web_dir, "compare.html")


@router.get("/login")
def login_page(request: Request, settings: SettingsDep) -> Response:
    """Where pages send a browser without a session; straight to the runs when none is needed."""
    auth: Authenticator = request.app.state.auth
    if not auth.registry.auth_required:
        return RedirectResponse("/", status_code=303)
    return _page(settings.web_dir, "login.html")


@router.get("/docs")
def docs_page(settings: SettingsDep) -> FileResponse:
    """Swagger UI over ``/openapi.json``, from the local copy."""
    return _page(settings.web_dir, "docs.html")


def swagger_dir() -> Path:
    """Swagger UI's files in the installed ``swagger-ui-py`` package (found, not imported)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise NotFoundError("Swagger UI is not installed: pip install swagger-ui-py")
    return Path(spec.submodule_search_locations[0]) / "static"


@router.get("/static/vendor/swagger-ui/{name}")
def swagger_asset(name: str) -> FileResponse:
    """``swagger-ui-bundle.js`` or ``swagger-ui.css`` (no other file of the package)."""
    media_type = _SWAGGER_FILES.get(name)
    path = swagger_dir() / name
    if media_type is None or not path.is_file():
        raise NotFoundError(f"no Swagger UI file {name!r:.80}")
    return FileResponse(
        path, media_type=media_type, headers={"Cache-Control": "public, max-age=86400"}
    )


@router.get("/static/vendor/plotly-cartesian-{version}.min.js")
def plotly_js(version: str, settings: SettingsDep) -> FileResponse:
    """The Plotly bundle, cached for a year: its URL changes with its version."""
    path = plotly_bundle(settings.web_dir)
    if version != plotly_version(path):
        raise NotFoundError(
            f"no Plotly bundle of version {version!r:.40} (this server ships "
            f"{plotly_version(path)})"
        )
    return FileResponse(
        path,
        media_type="text/javascript",
        headers={"Cache-Control": "public, max-age=31536000, immutable"},
    )


@router.get("/healthz", include_in_schema=True, tags=["health"])
async def healthz() -> dict[str, str]:
    """Liveness probe (on the event loop: no worker thread for a constant)."""
    return {"status": "ok"}
