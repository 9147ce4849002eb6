"""``trickscope import``: runs from the tools people come from, uploaded to a server.

``trickscope import tensorboard LOGDIR`` makes one run of each folder under LOGDIR that holds
event files (see :mod:`trickscope_cli.importers.tensorboard` for what is read and
:mod:`trickscope_cli.importers.upload` for why importing twice stores every point once).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from trickscope_cli.errors import CliError
from trickscope_cli.help_format import ExamplesFormatter

DEFAULT_URL = "http://127.0.0.1:8000"
IMPORT_TAG = "imported:tensorboard"
NAME_SOURCES = ("path", "leaf", "full")

_TENSORBOARD_EXAMPLES = """\
examples:
  trickscope import tensorboard runs/
  trickscope import tensorboard ~/logs/sweep --project sweep --url http://gpu-box:8000
  trickscope import tensorboard runs/ --dry-run

Each folder holding event files becomes one run, named by its path under LOGDIR (lr0.1/seed1).
Kept: scalars (tags as series names, steps and wall times, NaN and Inf included), histograms
and hparams (as the run's config); images, audio, text and graphs are counted and skipped.
Importing again updates the same runs; unchanged logs store nothing new.
"""


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "import",
        help="import runs from TensorBoard event files",
        description="Import runs recorded by another tool into a trickscope server.",
    )
    sources = parser.add_subparsers(dest="source", required=True, metavar="SOURCE")
    tensorboard = sources.add_parser(
        "tensorboard",
        help="read TensorBoard event files (needs the tensorboard package)",
        description="Upload the scalars, histograms and hparams of TensorBoard event files "
        "(from torch.utils.tensorboard, TensorFlow, Lightning, Keras, ...) as trickscope runs. "
        "Needs the tensorboard package: pip install 'trickscope[tensorboard]'.",
        epilog=_TENSORBOARD_EXAMPLES,
        formatter_class=ExamplesFormatter,
    )
    tensorboard.add_argument(
        "logdir", type=Path, metavar="LOGDIR", help="folder of event files (searched recursively)"
    )
    tensorboard.add_argument(
        "--project", help="project of the runs (default: the name of LOGDIR's folder)"
    )
    tensorboard.add_argument(
        "--url", help=f"server to upload to (default: TRICKSCOPE_URL, else {DEFAULT_URL})"
    )
    tensorboard.add_argument(
        "--token", help="a write token of the server (default: TRICKSCOPE_TOKEN)"
    )
    tensorboard.add_argument(
        "--name-from",
        choices=NAME_SOURCES,
        default="path",
        help="run names: the folder's path under LOGDIR (lr0.1/seed1), its last part (seed1) "
        "or LOGDIR's name and the path (sweep/lr0.1/seed1) (default path)",
    )
    tensorboard.add_argument(
        "--tag",
        dest="tags",
        action="append",
        default=[],
        metavar="TAG",
        help=f"a tag for every imported run, besides {IMPORT_TAG} (repeatable)",
    )
    tensorboard.add_argument(
        "--dry-run",
        action="store_true",
        help="read the event files and list the runs they make, without uploading",
    )
    tensorboard.set_defaults(handler=run_tensorboard)


def run_name(key: str, logdir: Path, name_from: str) -> str:
    """A run's name from its folder's path under the logdir (``.`` for the logdir itself)."""
    base = logdir.resolve().name or "tensorboard"
    if key == ".":
        return base
    if name_from == "leaf":
        return key.rsplit("/", 1)[-1]
    if name_from == "full":
        return f"{base}/{key}"
    return key


def run_tensorboard(args: argparse.Namespace) -> int:
    from trickscope_cli.importers import tensorboard
    from trickscope_cli.importers.runs import run_id
    from trickscope_cli.progress import progress_bar

    logdir: Path = args.logdir
    if not logdir.is_dir():
        raise CliError(f"no such folder: {logdir}")
    try:
        tensorboard.check_installed()
    except tensorboard.TensorboardMissing as exc:
        raise CliError(str(exc)) from None
    folders = tensorboard.find_runs(logdir)
    if not folders:
        mark = tensorboard.EVENT_FILE_MARK
        raise CliError(f"no TensorBoard event files under {logdir} (files named *{mark}*)")
    project = args.project or logdir.resolve().name or "tensorboard"
    tags = list(dict.fromkeys([IMPORT_TAG, *args.tags]))
    url = (args.url or os.environ.get("TRICKSCOPE_URL") or DEFAULT_URL).rstrip("/")
    uploader = None if args.dry_run else _connect(url, args.token)
    skipped: dict[str, int] = {}
    try:
        total = sum(folder.size for folder in folders)
        with progress_bar(total, desc="reading event files", unit="B", unit_scale=True) as bar:
            for folder in folders:
                bar.set_description(folder.key)
                run = tensorboard.read_run(folder, bar.update)
                for kind, count in run.skipped.items():
                    skipped[kind] = skipped.get(kind, 0) + count
                identity = run_id("tb", project, run.key, run.origin)
                name = run_name(run.key, logdir, args.name_from)
                summary = (
                    f"{len(run.scalars)} series ({run.points} points), "
                    f"{len(run.histograms)} histogram series ({run.histogram_count} histograms)"
                    f"{f', config of {len(run.config)} keys' if run.config else ''}"
                )
                if uploader is None:
                    bar.write(f"trickscope: would import {name} as run {identity}: {summary}")
                    continue
                _upload(uploader, run, identity, project, name, tags)
                # Through the bar, which clears itself and is drawn again below the line.
                bar.write(f"trickscope: imported {name}: {summary}; {uploader.url}/runs/{identity}")
    finally:
        if uploader is not None:
            uploader.close()
    if skipped:
        left_out = ", ".join(f"{count} {kind}" for kind, count in sorted(skipped.items()))
        print(f"trickscope: not imported: {left_out}", file=sys.stderr)
    return 0


def _connect(url: str, token: str | None) -> Any:
    from trickscope.transport import Rejected, Unavailable
    from trickscope_cli.importers.upload import Uploader

    try:
        uploader = Uploader(url, token or os.environ.get("TRICKSCOPE_TOKEN") or None)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    try:
        uploader.check()
    except Unavailable as exc:
        uploader.close()
        if exc.status is None:
            raise CliError(
                f"could not reach a trickscope server at {url}: is it running?"
            ) from None
        raise CliError(f"the server at {url} is not ready: {exc}") from None
    except Rejected as exc:
        uploader.close()
        raise CliError(f"the server at {url} refused the import: {exc}") from None
    return uploader


def _upload(
    uploader: Any, run: Any, identity: str, project: str, name: str, tags: list[str]
) -> None:
    from trickscope.transport import Rejected, Unavailable
    from trickscope_cli.progress import progress_bar

    items = run.points + run.histogram_count
    with progress_bar(items, desc=f"uploading {name}", unit="pt", unit_scale=True) as bar:
        try:
            uploader.upload(
                run, run_id=identity, project=project, name=name, tags=tags, on_sent=bar.update
            )
        except (Rejected, Unavailable) as exc:
            raise CliError(f"{name}: {exc}; run the import again to finish it") from None
