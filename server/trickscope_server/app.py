"""The application factory: settings in, a ready FastAPI app out (schema migrated)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import metadata

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.staticfiles import StaticFiles
from starlette.types import Message

from trickscope_server.api import events, ingest, liveness, pages, runs, session
from trickscope_server.api.problems import install_problem_handlers
from trickscope_server.config import Settings
from trickscope_server.gc_policy import apply_server_gc_policy
from trickscope_server.live import Broadcaster
from trickscope_server.live.notify import PgRelay
from trickscope_server.live.read_follows import ReadFollows
from trickscope_server.live.seen import SeenStamps
from trickscope_server.security import (
    Authenticator,
    HostPolicy,
    SecurityGuard,
    TokenRegistry,
)
from trickscope_server.security.sessions import session_key
from trickscope_server.storage import Database

log = logging.getLogger("trickscope_server")


def _version() -> str:
    try:
        return metadata.version("trickscope")
    except metadata.PackageNotFoundError:
        return "0.0.0+checkout"


def create_app(settings: Settings) -> FastAPI:
    """Build the server: database (migrated to head), broadcaster, routes and error handlers."""
    db = Database(settings.database_url)
    if settings.migrate_on_start:
        db.upgrade()

    broadcaster = Broadcaster(
        db,
        poll_seconds=settings.sse_poll_seconds,
        health_seconds=settings.sse_health_seconds,
        grace_seconds=settings.liveness_grace_seconds,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # On PostgreSQL other processes (workers) may ingest: their commits wake our readers.
        relay = PgRelay(settings.database_url, broadcaster) if db.dialect == "postgresql" else None
        if relay is not None:
            relay.start()
        await _warm_up(_app)
        try:
            yield
        finally:
            if relay is not None:
                relay.close()
            db.dispose()

    app = FastAPI(
        title="trickscope",
        version=_version(),
        summary="Training diagnostics for PyTorch: ingest, storage, live charts.",
        lifespan=lifespan,
        # /docs is served by pages.py from the local Swagger UI copy (no CDN); ReDoc has none.
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    app.state.settings = settings
    app.state.db = db
    app.state.broadcaster = broadcaster
    app.state.read_follows = ReadFollows(db, broadcaster)
    app.state.seen_stamps = SeenStamps(forget_after=settings.liveness_grace_seconds)
    install_problem_handlers(app)
    registry = TokenRegistry(
        db, env_token=settings.env_token(), ttl_seconds=settings.token_cache_seconds
    )
    registry.load()
    secret = settings.session_secret.get_secret_value() if settings.session_secret else None
    app.state.auth = Authenticator(
        registry, session_key=session_key(secret), session_seconds=settings.session_seconds
    )
    app.add_middleware(
        SecurityGuard,
        auth=app.state.auth,
        hosts=HostPolicy(allowed_hosts=settings.allowed_hosts, bind_host=settings.host),
    )
    # The agent's routes first: a request is matched against each router in turn (routes of
    # other routers cost a regex each), and ingest is most of the server's requests.
    app.include_router(ingest.router)
    app.include_router(liveness.router)
    app.include_router(runs.router)
    app.include_router(events.router)
    app.include_router(session.router)
    # Pages before the static mount: the Plotly bundle is served with its own caching.
    app.include_router(pages.router)
    app.mount(
        "/static",
        StaticFiles(directory=settings.web_dir, check_dir=False),
        name="static",
    )
    return app


async def _warm_up(app: FastAPI) -> None:
    """Do at start the one-time work the first requests would otherwise pay (~40 ms of CPU, on
    the first batch of the first run): FastAPI builds every route's request handling when a
    request first reaches the router (one that matches no route walks them all), and the first
    hop to the worker threads imports anyio's backend."""
    await run_in_threadpool(lambda: None)
    path = "/.trickscope-start"
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "client": None,
        "server": None,
    }

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(_message: Message) -> None:
        pass

    try:
        await app.router(scope, receive, send)
    except Exception:  # only time is at stake: the first request then builds what it needs
        log.warning("trickscope: warming the routes up at start failed", exc_info=True)


def create_app_from_env() -> FastAPI:
    """The app from ``TRICKSCOPE_*`` variables alone: the factory each uvicorn worker calls."""
    app = create_app(Settings())
    # As ``serve`` does for one process: full collections stop pausing ingest and the streams.
    apply_server_gc_policy()
    return app
