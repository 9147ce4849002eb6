"""The dashboard's pages and static files, and the Plotly bundle from the installed package."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from trickscope_server.api.deps import RunId, SettingsDep
from trickscope_server.errors import NotFoundError

router = APIRouter(include_in_schema=False)

# Plotly sets inline styles, hence 'unsafe-inline' for styles only; scripts stay same-origin.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'"
)
_PAGE_HEADERS = {"Content-Security-Policy": CSP, "Cache-Control": "no-cache"}


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
