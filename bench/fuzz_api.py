"""Fuzzing campaign: schemathesis over the whole REST API of a real server, SQLite and PostgreSQL.

The suite's test (tests/integration/test_fuzz_api.py) runs 20 examples per operation and mode;
this runs as many as asked and prints one table row per back end: operations, requests sent,
answers by status, 5xx (and live streams broken after their headers). Generation is
derandomized, so the same example count sends the same requests.

    python bench/fuzz_api.py [--examples 200] [--pg postgresql+psycopg://...] [--source DIR]

``--source`` serves another source tree (e.g. ``git archive <commit> server agent | tar -x -C
DIR``) to count what the fuzzer finds there: the server is started with DIR/server and DIR/agent
first on PYTHONPATH, and its own /openapi.json is fuzzed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import urllib.request
import uuid
from pathlib import Path

import psycopg
from sqlalchemy import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.fuzzing import SERVER_ENV, fuzz_api  # noqa: E402
from tests.helpers import start_server, stop_server  # noqa: E402


def _pg_schema(url: str) -> tuple[str, str]:
    """A fresh schema on the PostgreSQL at ``url``: (its URL, its name)."""
    parsed = make_url(url)
    schema = f"fuzz_{uuid.uuid4().hex[:10]}"
    plain = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(plain, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
    scoped = parsed.update_query_dict({"options": f"-csearch_path={schema}"})
    return scoped.render_as_string(hide_password=False), schema


def _drop_schema(url: str, schema: str) -> None:
    plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(plain, autocommit=True) as admin:
        admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


def run(backend: str, database_url: str, args: argparse.Namespace, work: Path) -> None:
    env = dict(SERVER_ENV)
    if args.source:
        source = Path(args.source).resolve()
        env["PYTHONPATH"] = os.pathsep.join([str(source / "server"), str(source / "agent")])
    server = start_server(database_url, work / f"{backend}.log", env=env)
    try:
        with urllib.request.urlopen(f"{server.url}/openapi.json", timeout=10) as response:
            openapi = json.load(response)
        report = fuzz_api(server.url, openapi, max_examples=args.examples)
    finally:
        stop_server(server)
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(report.statuses.items()))
    print(
        f"| {backend} | {report.operations} | {report.cases} | {report.server_errors} | "
        f"{report.seconds:.0f} s | {statuses} |",
        flush=True,
    )
    for failure in report.failures[: args.show]:
        print(f"    {failure[:300]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=200, help="per operation and mode")
    parser.add_argument("--pg", default=os.environ.get("TRICKSCOPE_TEST_PG_URL"))
    parser.add_argument("--source", help="serve this source tree instead of the installed one")
    parser.add_argument("--show", type=int, default=10, help="failures to print per back end")
    args = parser.parse_args()
    machine = platform.processor() or platform.machine()
    print(f"# {platform.node()} {machine}, {os.cpu_count()} CPUs, examples {args.examples}")
    print("| back end | operations | requests | 5xx | time | answers by status |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        run("SQLite", f"sqlite:///{work / 'fuzz.db'}", args, work)
        if args.pg:
            url, schema = _pg_schema(args.pg)
            try:
                run("PostgreSQL", url, args, work)
            finally:
                _drop_schema(args.pg, schema)


if __name__ == "__main__":
    main()
