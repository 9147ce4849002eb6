"""The read client for the commands that read runs (``runs ls``, ``export``).

Refusals and an unreachable server become :class:`CliError` lines, never tracebacks.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from typing import Any

from trickscope_cli.errors import CliError

DEFAULT_URL = "http://127.0.0.1:8000"


def add_server_options(parser: argparse.ArgumentParser) -> None:
    """``--url`` and ``--token``, falling back to the agent's environment variables."""
    parser.add_argument(
        "--url", help=f"server to read from (default: TRICKSCOPE_URL, else {DEFAULT_URL})"
    )
    parser.add_argument(
        "--token",
        default=None,
        help="a read token of the server (default: TRICKSCOPE_TOKEN); a server without tokens "
        "needs none",
    )


def open_api(args: argparse.Namespace) -> Any:
    """A ``trickscope.Api`` for the server the options name."""
    from trickscope.client import Api

    url = args.url or os.environ.get("TRICKSCOPE_URL") or DEFAULT_URL
    try:
        return Api(url, token=args.token or os.environ.get("TRICKSCOPE_TOKEN") or None)
    except ValueError as exc:
        raise CliError(str(exc)) from None


@contextlib.contextmanager
def server_errors(api: Any) -> Iterator[None]:
    """Turn the client's errors into one-line :class:`CliError` messages."""
    from trickscope.client import ApiError, ServerUnreachable

    try:
        yield
    except ServerUnreachable as exc:
        raise CliError(f"{exc.detail} (is `trickscope serve` running there?)") from None
    except ApiError as exc:
        hint = " (pass --token or set TRICKSCOPE_TOKEN)" if exc.status == 401 else ""
        raise CliError(f"{api.url} answered {exc.status} {exc.title}: {exc.detail}{hint}") from None
