"""``trickscope serve``: the server with its dashboard, SQLite by default."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
from typing import Any

from trickscope_cli.errors import CliError
from trickscope_cli.help_format import ExamplesFormatter


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "serve",
        help="start the server and dashboard",
        description="Start the trickscope server: REST API under /api/v1, dashboard at /. "
        "Settings come from TRICKSCOPE_* environment variables; flags override them.",
        epilog="examples:\n"
        "  trickscope serve                     dashboard at http://127.0.0.1:8000/\n"
        "  trickscope serve --port 8080 --db postgresql+psycopg://user:pass@host/db\n"
        "  TRICKSCOPE_TOKEN=$(openssl rand -hex 32) trickscope serve --host 0.0.0.0",
        formatter_class=ExamplesFormatter,
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
        "--allowed-host",
        dest="allowed_hosts",
        action="append",
        metavar="NAME",
        help="a host name clients use to reach this server (repeatable; TRICKSCOPE_ALLOWED_HOSTS). "
        "Loopback names and IP addresses are always accepted; other Host headers get a 421",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="serve on a non-loopback interface without any token: anyone who reaches the port "
        "can read, change and delete every run",
    )
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="server processes sharing the port (default 1; TRICKSCOPE_WORKERS). More than one "
        "needs PostgreSQL: SQLite serializes writers, so extra processes only wait on its lock",
    )
    parser.add_argument(
        "--log-level",
        default="warning",
        choices=["debug", "info", "warning", "error"],
        help="what the server logs (default warning)",
    )
    parser.set_defaults(handler=run)


def settings_from_args(args: argparse.Namespace) -> Any:
    """Settings from the environment, with the flags the user gave taking precedence."""
    from trickscope_server.config import Settings

    overrides = {
        field: getattr(args, field)
        for field in ("database_url", "host", "port", "allowed_hosts", "insecure", "workers")
        if getattr(args, field, None) is not None
    }
    try:
        return Settings(**overrides)
    except ValueError as exc:
        raise CliError(f"invalid setting: {exc}") from None


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from trickscope_cli.quiet_server import QuietServer
    from trickscope_server.app import create_app
    from trickscope_server.gc_policy import apply_server_gc_policy
    from trickscope_server.security import is_loopback_bind

    settings = settings_from_args(args)
    refusal = workers_refusal(settings)
    if refusal is not None:
        raise CliError(refusal)
    app = create_app(settings)
    refusal = exposure_refusal(settings, auth_required=app.state.auth.registry.auth_required)
    if refusal is not None:
        app.state.db.dispose()
        raise CliError(refusal)
    # Full collections would pause ingest and the live streams for tens of milliseconds.
    apply_server_gc_policy()
    print(f"trickscope: dashboard at http://{settings.host}:{settings.port}/", flush=True)
    print(f"trickscope: storing runs in {masked(settings.database_url)}", flush=True)
    if app.state.auth.registry.auth_required:
        print("trickscope: authentication on (a token is required)", flush=True)
    elif not is_loopback_bind(settings.host):
        print("trickscope: --insecure: serving WITHOUT authentication", flush=True)
    if settings.workers > 1:
        app.state.db.dispose()  # the parent only migrated and checked; the workers serve
        print(f"trickscope: {settings.workers} worker processes", flush=True)
        os.environ.update(worker_environment(settings))
        uvicorn.run(
            "trickscope_server.app:create_app_from_env",
            factory=True,
            workers=settings.workers,
            host=settings.host,
            port=settings.port,
            log_level=args.log_level,
            timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
        )
        return 0
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=args.log_level,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
    )
    server = QuietServer(config)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    return 0 if server.started else STARTUP_FAILURE


# uvicorn's exit status when the server could not start (the port taken, for one).
STARTUP_FAILURE = 3
# Live streams never finish on their own: on SIGTERM, requests get this long to complete, then
# the open streams are closed (browsers reconnect with Last-Event-ID and miss nothing).
SHUTDOWN_GRACE_SECONDS = 3


def workers_refusal(settings: Any) -> str | None:
    """Why these settings cannot run several workers, or None when they can."""
    from sqlalchemy.engine import make_url

    if settings.workers > 1 and make_url(settings.database_url).get_backend_name() == "sqlite":
        return (
            f"refusing --workers {settings.workers} on SQLite: a SQLite file admits one writer "
            "at a time, so extra server processes would only queue on its lock (and each "
            "would hold live streams the others cannot wake). Use PostgreSQL "
            "(--db postgresql+psycopg://user:pass@host/db) or run one worker"
        )
    return None


def worker_environment(settings: Any) -> dict[str, str]:
    """``TRICKSCOPE_*`` variables that give every worker the parent's settings.

    Workers build their app from the environment alone. They share one session secret (made
    here when none is set), so a login cookie signed by one worker verifies on the others, and
    they skip migrating: the parent has already done it.
    """
    session_secret = (
        settings.session_secret.get_secret_value()
        if settings.session_secret
        else secrets.token_hex(32)
    )
    return {
        "TRICKSCOPE_DATABASE_URL": settings.database_url,
        "TRICKSCOPE_HOST": settings.host,
        "TRICKSCOPE_PORT": str(settings.port),
        "TRICKSCOPE_ALLOWED_HOSTS": json.dumps(settings.allowed_hosts),
        "TRICKSCOPE_INSECURE": "true" if settings.insecure else "false",
        "TRICKSCOPE_SESSION_SECRET": session_secret,
        "TRICKSCOPE_MIGRATE_ON_START": "false",
    }


MIN_TOKEN_CHARS = 16


def exposure_refusal(settings: Any, *, auth_required: bool) -> str | None:
    """Why a server with these settings must not start, or None when it may.

    A loopback-only server may run open, as a laptop's does; one that other machines can reach
    needs a token (or an explicit ``--insecure``).
    """
    from trickscope_server.security import is_loopback_bind

    if is_loopback_bind(settings.host) or settings.insecure:
        return None
    if not auth_required:
        return (
            f"refusing to serve on {settings.host} without authentication: anyone who reaches "
            "the port could read, change and delete every run. Create a token first "
            "(`trickscope token create --scope write --db URL`, then give the agents "
            "TRICKSCOPE_TOKEN) or set TRICKSCOPE_TOKEN for the server (e.g. from "
            "`openssl rand -hex 32`); bind 127.0.0.1 to stay local; or pass --insecure to "
            "serve open anyway"
        )
    env_token = settings.env_token()
    if env_token is not None and len(env_token) < MIN_TOKEN_CHARS:
        return (
            f"refusing to serve on {settings.host}: TRICKSCOPE_TOKEN has {len(env_token)} "
            f"characters, fewer than {MIN_TOKEN_CHARS}; use a random one such as "
            "`openssl rand -hex 32`"
        )
    return None


def masked(database_url: str) -> str:
    """The database URL with any password hidden, for printing."""
    from sqlalchemy.engine import make_url

    return make_url(database_url).render_as_string(hide_password=True)
