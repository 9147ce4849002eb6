"""``trickscope runs ls``: the runs of a server as an aligned table (or JSON)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from trickscope_cli._client import add_server_options, open_api, server_errors
from trickscope_cli.errors import CliError

MAX_CELL = 40  # characters; longer values are cut with an ellipsis
DIFFERING_CONFIG_COLUMNS = 3  # config keys shown by default: those whose values differ


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "runs",
        help="list the runs of a server",
        description="Read runs over the REST API, with its filters and sort keys.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = actions.add_parser(
        "ls",
        help="list runs as a table",
        description="List runs, newest first, as a table: id, name, status, start, duration, "
        "last step, then config and metric columns (by default the keys filtered or sorted on, "
        "the config keys whose values differ between the runs listed, and the loss). Filters "
        "are the REST API's and all must hold.",
    )
    ls.add_argument("--project", help="only this project's runs")
    ls.add_argument(
        "--tag", action="append", default=[], metavar="TAG", help="runs with this tag (repeatable)"
    )
    ls.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="KEY:VALUE",
        help="a config value, e.g. optimizer.name:adamw or lr:0.1 (repeatable)",
    )
    ls.add_argument(
        "--metric",
        action="append",
        default=[],
        metavar="EXPR",
        help="a latest value compared with <, <=, >, >= or =, e.g. 'loss/train<0.5' "
        "(repeatable; quote it for the shell)",
    )
    ls.add_argument(
        "--status",
        choices=["running", "finished", "failed", "crashed"],
        help="only runs in this state (a silent running run reads as crashed)",
    )
    ls.add_argument(
        "--sort",
        metavar="KEY",
        help="created_at (default, newest first), name, status, config:<key> or metric:<name>; "
        "prefix - for descending, written --sort=-KEY",
    )
    ls.add_argument(
        "--limit", type=int, default=50, metavar="N", help="at most N runs (default 50; 0: all)"
    )
    ls.add_argument(
        "--columns",
        metavar="COLS",
        help="comma-separated extra columns instead of the default ones: config.<key> or "
        "metric.<name>, e.g. config.lr,metric.loss/train",
    )
    ls.add_argument(
        "--json", action="store_true", help="print the runs as the REST API returns them"
    )
    add_server_options(ls)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.limit < 0:
        raise CliError(f"--limit must be 0 (all) or more, got {args.limit}")
    filters = [f"config={c}" for c in args.config] + [f"metric={m}" for m in args.metric]
    api = open_api(args)
    with server_errors(api):
        try:
            listing = api.runs(
                project=args.project,
                filters=filters,
                sort=args.sort,
                tags=args.tag,
                status=args.status,
                limit=args.limit or None,
            )
        except ValueError as exc:
            raise CliError(str(exc)) from None
        records = list(listing)
        cut = listing.has_more
    if args.json:
        print(json.dumps([r.data for r in records], indent=2))
        return 0
    if not records:
        print("trickscope: no runs match", flush=True)
        return 0
    extra = parse_columns(args.columns) if args.columns else default_columns(args, records)
    print(render_table(table_rows(records, extra)))
    if cut:
        print(
            f"trickscope: the first {len(records)} runs; --limit 0 lists them all",
            file=sys.stderr,
            flush=True,
        )
    return 0


def parse_columns(text: str) -> list[str]:
    """``--columns`` as column keys (``config.<key>`` / ``latest.<name>``)."""
    columns = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        kind, dot, key = item.partition(".")
        if kind not in ("config", "metric", "latest") or not dot or not key:
            raise CliError(f"column {item!r} must be config.<key> or metric.<name>")
        columns.append(f"{'config' if kind == 'config' else 'latest'}.{key}")
    return columns


def _config_value(config: dict[str, Any], dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _flat_keys(config: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in config.items():
        if isinstance(value, dict) and value:
            keys.extend(_flat_keys(value, f"{prefix}{key}."))
        else:
            keys.append(f"{prefix}{key}")
    return keys


def default_columns(args: argparse.Namespace, records: Sequence[Any]) -> list[str]:
    """The keys filtered and sorted on, the config keys that differ, and the loss."""
    columns = [f"config.{c.partition(':')[0]}" for c in args.config]
    for expr in args.metric:
        name = expr
        for op in ("<=", ">=", "<", ">", "="):
            name = name.split(op, 1)[0]
        columns.append(f"latest.{name.strip()}")
    if args.sort:
        kind, _, key = args.sort.lstrip("-").partition(":")
        if kind in ("config", "metric") and key:
            columns.append(f"{'config' if kind == 'config' else 'latest'}.{key}")
    keys = list(dict.fromkeys(k for r in records for k in _flat_keys(r.config)))
    differing = [
        k
        for k in keys
        if len({json.dumps(_config_value(r.config, k), sort_keys=True) for r in records}) > 1
    ]
    columns += [f"config.{k}" for k in differing[:DIFFERING_CONFIG_COLUMNS]]
    losses = sorted({n for r in records for n in r.latest if n.startswith("loss")})
    if losses:
        columns.append(f"latest.{'loss/train' if 'loss/train' in losses else losses[0]}")
    return list(dict.fromkeys(columns))


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone().strftime("%Y-%m-%d %H:%M")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def cell(value: Any) -> str:
    """A value as table text: numbers to 4 significant digits, nested values as JSON."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return str(value) if not math.isfinite(value) else f"{value:.4g}"
    if isinstance(value, bool | int | str):
        text = str(value)
    else:
        text = json.dumps(value, sort_keys=True)
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def table_rows(records: Sequence[Any], columns: Sequence[str]) -> list[list[str]]:
    """The header and one row per run."""
    header = ["ID", "NAME", "STATUS", "STARTED", "DURATION", "STEP"]
    header += [c.removeprefix("latest.").removeprefix("config.") for c in columns]
    rows = [header]
    for r in records:
        row = [r.id, cell(r.name), r.status, _when(r.started_at), _duration(r.duration)]
        row.append(cell(r.last_step))
        for column in columns:
            kind, _, key = column.partition(".")
            value = _config_value(r.config, key) if kind == "config" else r.latest.get(key)
            row.append(cell(value))
        rows.append(row)
    return rows


def render_table(rows: list[list[str]]) -> str:
    """Rows as left-aligned columns two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(text.ljust(width) for text, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
