"""``trickscope token``: create, list and revoke the tokens the server accepts."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from trickscope_cli.errors import CliError


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "token",
        help="create, list or revoke access tokens",
        description="Tokens authenticate agents (TRICKSCOPE_TOKEN) and dashboard logins. Once "
        "any token exists, the server refuses requests without one. Only the SHA-256 of a "
        "secret is stored: it is printed once, at creation.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="create a token and print its secret once")
    create.add_argument(
        "--scope",
        required=True,
        choices=["read", "write"],
        help="read: the dashboard and queries; write: also what the agent sends",
    )
    create.add_argument("--name", default="", help="a label shown by `token list`")
    listing = actions.add_parser("list", help="list tokens (never their secrets)")
    revoke = actions.add_parser("revoke", help="revoke a token (takes effect within seconds)")
    revoke.add_argument("id", help="the token's id, as `token list` shows it")
    for sub in (create, listing, revoke):
        sub.add_argument(
            "--db",
            "--database-url",
            dest="database_url",
            metavar="URL",
            help="the server's database (default: TRICKSCOPE_DATABASE_URL, else the default "
            "SQLite file)",
        )
    parser.set_defaults(handler=run)


def _database(args: argparse.Namespace) -> Any:
    from trickscope_cli.serve_cmd import settings_from_args
    from trickscope_server.storage import Database

    settings = settings_from_args(args)
    db = Database(settings.database_url)
    if settings.migrate_on_start:
        db.upgrade()  # the tokens table comes with the schema
    return db


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))


def run(args: argparse.Namespace) -> int:
    from trickscope_server.errors import TrickscopeError
    from trickscope_server.services import tokens

    db = _database(args)
    try:
        if args.action == "create":
            info, secret = tokens.create_token(db, scope=args.scope, name=args.name)
            # The secret alone on stdout, so `TOKEN=$(trickscope token create ...)` works.
            print(secret, flush=True)
            print(
                f"trickscope token: created {info.scope} token {info.id}"
                f"{f' ({info.name})' if info.name else ''}; the secret above is not shown again",
                file=sys.stderr,
            )
        elif args.action == "list":
            print(f"{'ID':32}  {'SCOPE':5}  {'CREATED':16}  {'LAST USED':16}  {'REVOKED':16}  NAME")
            for info in tokens.list_tokens(db):
                print(
                    f"{info.id:32}  {info.scope:5}  {_when(info.created_at):16}  "
                    f"{_when(info.last_used_at):16}  {_when(info.revoked_at):16}  {info.name}"
                )
        else:
            info = tokens.revoke_token(db, token_id=args.id)
            print(f"trickscope token: revoked {info.id} at {_when(info.revoked_at)}")
    except TrickscopeError as exc:
        raise CliError(exc.detail) from None
    finally:
        db.dispose()
    return 0
