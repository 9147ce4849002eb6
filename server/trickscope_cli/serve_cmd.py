"""``trickscope serve``: the server with its dashboard, SQLite by default."""

from __future__ import annotations

import argparse
import gc
from typing import Any

from trickscope_cli.errors import CliError


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "serve",
        help="start the server and dashboard",
        description="Start the trickscope server: REST API under /api/v1, dashboard at /. "
        "Settings come from TRICKSCOPE_* environment variables; flags override them.",
    )
    parser.add_argument(
        "--db",
        "--database-url",
        dest="database_url",
        metavar="URL",
        help="SQLAlchemy URL of the store (default: a SQLite file in the user data directory; "
        "PostgreSQL: postgresql+psycopg://user:pass@host/db)",
    )
    parser.add_argument("--host", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to bind (default 8000)")
    parser.add_argument(
        "--log-level", default="warning", choices=["debug", "info", "warning", "error"]
    )
    parser.set_defaults(handler=run)


def settings_from_args(args: argparse.Namespace) -> Any:
    """Settings from the environment, with the flags the user gave taking precedence."""
    from trickscope_server.config import Settings

    overrides = {
        field: getattr(args, field)
        for field in ("database_url", "host", "port")
        if getattr(args, field, None) is not None
    }
    try:
        return Settings(**overrides)
    except ValueError as exc:
        raise CliError(f"invalid setting: {exc}") from None


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from trickscope_server.app import create_app

    settings = settings_from_args(args)
    app = create_app(settings)
    # What is alive now (the app, SQLAlchemy, FastAPI and their modules, ~100k objects) lives
    # as long as the server: kept out of the cyclic collector's reach, a full collection no
    # longer pauses ingest and the live streams for tens of milliseconds to scan it.
    gc.collect()
    gc.freeze()
    print(f"trickscope: dashboard at http://{settings.host}:{settings.port}/", flush=True)
    print(f"trickscope: storing runs in {masked(settings.database_url)}", flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=args.log_level)
    return 0


def masked(database_url: str) -> str:
    """The database URL with any password hidden, for printing."""
    from sqlalchemy.engine import make_url

    return make_url(database_url).render_as_string(hide_password=True)
