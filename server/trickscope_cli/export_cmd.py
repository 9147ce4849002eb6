"""``trickscope export``: every point of a run, streamed from the server to a file."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from trickscope_cli._client import add_server_options, open_api, server_errors
from trickscope_cli.errors import CliError
from trickscope_cli.progress import progress_bar


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "export",
        help="download every point of a run as Parquet or CSV",
        description="Stream a run's full history (every point of every series, columns "
        "series, step, value, wall_time) from the server to a file. pandas reads either "
        "format; non-finite values are NaN, Infinity and -Infinity.",
    )
    parser.add_argument("run_id", metavar="RUN_ID", help="the run's id (see `trickscope runs ls`)")
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        help="file to write (default: RUN_ID.parquet, or RUN_ID.csv with --format csv)",
    )
    parser.add_argument(
        "--format",
        choices=["parquet", "csv"],
        help="file format (default: from the output's suffix, else parquet)",
    )
    add_server_options(parser)
    parser.set_defaults(handler=run)


def output_and_format(args: argparse.Namespace) -> tuple[Path, str]:
    """The file to write and its format, each defaulting from the other."""
    fmt = args.format
    if fmt is None:
        suffix = args.output.suffix.lower() if args.output is not None else ""
        fmt = "csv" if suffix == ".csv" else "parquet"
    output = args.output if args.output is not None else Path(f"{args.run_id}.{fmt}")
    return output, fmt


def find_run(api: Any, run_id: str) -> Any:
    """The run's record; a run the server does not have is named as such."""
    from trickscope.client import ApiError

    try:
        return api.run(run_id)
    except ApiError as exc:
        if exc.status == 404:
            raise CliError(
                f"{api.url} has no run {run_id!r} (`trickscope runs ls` lists them)"
            ) from None
        raise


def run(args: argparse.Namespace) -> int:
    output, fmt = output_and_format(args)
    if output.is_dir():
        raise CliError(f"{output} is a folder: name the file to write, e.g. -o run.{fmt}")
    if not output.parent.is_dir():
        raise CliError(f"the folder {output.parent} does not exist")
    api = open_api(args)
    with (
        server_errors(api),
        progress_bar(desc=f"export {args.run_id[:12]}", unit="B", unit_scale=True) as bar,
    ):

        def advance(size: int, total: int | None) -> None:
            if total is not None and bar.total is None:
                bar.total = total
            bar.update(size)

        record = find_run(api, args.run_id)
        try:
            record.export(output, format=fmt, progress=advance)
        except OSError as exc:
            raise CliError(f"could not write {output}: {exc}") from None
    size = output.stat().st_size
    print(f"trickscope: wrote {output} ({size / 1e6:.1f} MB, {fmt})", flush=True)
    return 0
