"""The dashboard's pages and static files, the Plotly bundle and Swagger UI from installed packages.

Every page carries the Content-Security-Policy of ``security/headers.py``: scripts, styles and
fetches are same-origin only, so nothing is loaded from a CDN.
"""

from __future__ import annotations

import importlib.util
from importlib import resources
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


def plotly_bundle() -> Path:
    """``plotly.min.js`` from the installed ``plotly`` package (no CDN, no network)."""
    return Path(str(resources.files("plotly").joinpath("package_data", "plotly.min.js")))


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


@router.get("/static/vendor/plotly.min.js")
def plotly_js() -> FileResponse:
    """The Plotly bundle, cached long: it changes only when the plotly package does."""
    path = plotly_bundle()
    if not path.is_file():
        raise NotFoundError(f"plotly.min.js is missing from the plotly package ({path})")
    return FileResponse(
        path,
        media_type="text/javascript",
        headers={"Cache-Control": "public, max-age=31536000"},
    )


@router.get("/healthz", include_in_schema=True, tags=["health"])
def healthz() -> dict[str, str]:
    """Liveness probe."""
    return {"status": "ok"}
