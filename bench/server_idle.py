"""What an idle ``trickscope serve`` costs: its CPU per second with no request at all.

    python bench/server_idle.py [--backends sqlite postgresql] [--seconds 10] [--windows 5]
                                [--before <tree>]

Per backend, one ``trickscope serve`` process (a SQLite file in a temporary directory, or
PostgreSQL at ``--pg-url``) is started, answers one ``/healthz``, and is left alone for 5 s; then
its CPU clock (every thread) is read over ``--windows`` windows of ``--seconds`` each. With
``--before <tree>`` (a checkout of another commit), the same is done first with that tree's
server (``PYTHONPATH=<tree>/agent:<tree>/server``), and both are shown side by side.

A laptop that trains while the server runs pays this whenever the server is up, followed runs or
not; the per-step benchmark (``bench/server_per_step.py``) subtracts it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _peers import Server, start_trickscope  # noqa: E402
from _server_cpu import idle_rate  # noqa: E402

PG_URL = "postgresql+psycopg://trickscope:trickscope@127.0.0.1:5432/trickscope_test"


def database_url(backend: str, pg_url: str, folder: Path, tag: str) -> str:
    return f"sqlite:///{folder / f'{tag}.db'}" if backend == "sqlite" else pg_url


def start(url: str, tree: Path | None) -> Server:
    """A server of this checkout, or of ``tree``."""
    saved = os.environ.get("PYTHONPATH")
    if tree is not None:
        os.environ["PYTHONPATH"] = f"{tree / 'agent'}:{tree / 'server'}"
    try:
        return start_trickscope(url, "--log-level", "warning")
    finally:
        if tree is not None:
            if saved is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=["sqlite"])
    parser.add_argument("--pg-url", default=os.environ.get("TRICKSCOPE_TEST_PG_URL", PG_URL))
    parser.add_argument("--seconds", type=float, default=10.0, help="length of a window")
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--before", type=Path, help="a checkout of the commit to compare with")
    args = parser.parse_args()

    trees: dict[str, Path | None] = {"this tree": None}
    if args.before is not None:
        trees = {"before": args.before.resolve(), "this tree": None}
    print(f"idle server CPU, ms per second: median (range) of {args.windows} windows")
    print("| backend | " + " | ".join(trees) + " |")
    print("|---|" + "---:|" * len(trees))
    for backend in args.backends:
        rates: dict[str, list[float]] = {name: [] for name in trees}
        with tempfile.TemporaryDirectory() as folder:
            for name, tree in trees.items():  # one at a time: they share the database
                server = start(database_url(backend, args.pg_url, Path(folder), name), tree)
                try:
                    time.sleep(5.0)  # start-up work (migrations, warm-up) done
                    for _ in range(args.windows):
                        rate = idle_rate(server.process.pid, args.seconds)
                        rates[name].append(rate * 1e3)
                finally:
                    server.stop()
        cells = [
            f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})"
            for values in rates.values()
        ]
        print(f"| {backend} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
