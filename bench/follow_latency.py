"""How soon a run page that opens on an unfollowed run gets its live points.

    python bench/follow_latency.py [--backends sqlite postgresql] [--trials 12]

Per backend, one ``trickscope serve`` process (a SQLite file in a temporary directory, or
PostgreSQL at ``--pg-url``). Each trial, the real agent at its defaults logs a point every 10 ms
(``flush_secs`` 0.5 s; 5 minutes while nobody follows the run); once the server's answers say
nobody follows the run, and after a random 0-2 s more, a live stream opens on the run, as a run
page does. Measured: from the stream's request until it has brought
the last point logged before it opened. Two arms, alternated trial by trial:

- ``wait for a follower``: the agent as shipped, holding ``GET /runs/{id}/followed?wait=``, which
  the server answers when the stream opens;
- ``answers only``: the same agent with that wait switched off, hearing of the stream from the
  answer to its next slow flush, every 2 s (the default before the wait; at 300 s this arm
  would take two and a half minutes on average).

Reported: median, p90 and the worst trial per arm, in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _peers import start_trickscope  # noqa: E402

PG_URL = "postgresql+psycopg://trickscope:trickscope@127.0.0.1:5432/trickscope_test"
ARMS = ("wait for a follower", "answers only")


def _points(lines: Iterator[str]) -> Iterator[dict[str, dict[str, list[float]]]]:
    """The ``points`` events of an SSE stream, decoded."""
    event = ""
    for line in lines:
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:") and event == "points":
            yield json.loads(line[5:])["series"]
        elif not line:
            event = ""


ANSWERS_ONLY_FLUSH_SECS = 2.0


def trial(url: str, journal: Path, *, waits: bool) -> float:
    """Seconds from a stream's opening until it brought the last point logged before."""
    import trickscope
    from trickscope.follow import FollowWatch

    start = FollowWatch.start
    if not waits:
        FollowWatch.start = lambda self: None  # type: ignore[method-assign]
    try:
        # Without the wait the agent hears of the stream from its next flush's answer: at the
        # 300 s default, 150 s on average; 2 s (the default before the wait) is shown.
        slow = {} if waits else {"unfollowed_flush_secs": ANSWERS_ONLY_FLUSH_SECS}
        run = trickscope.init(project="latency", url=url, journal_dir=journal, quiet=True, **slow)
        return _trial(run, url)
    finally:
        FollowWatch.start = start  # type: ignore[method-assign]


def _trial(run: Any, url: str) -> float:
    step = 0
    stop = threading.Event()

    def log() -> None:
        nonlocal step
        while not stop.is_set():
            run.log({"x": float(step)}, step=step)
            step += 1
            time.sleep(0.01)

    logger = threading.Thread(target=log, daemon=True)
    logger.start()
    try:
        delivery = run.sender.delivery  # type: ignore[union-attr]
        deadline = time.monotonic() + 30
        while delivery.followed:  # the first answer says nobody follows the run
            if time.monotonic() > deadline:
                raise RuntimeError("the server never said the run was unfollowed")
            time.sleep(0.01)
        time.sleep(random.uniform(0.0, 2.0))
        with httpx.Client(base_url=url, timeout=30) as client:
            last_before = step - 1
            opened = time.monotonic()
            with client.stream("GET", f"/api/v1/runs/{run.id}/events") as stream:
                for series in _points(stream.iter_lines()):
                    steps = series.get("x", {}).get("step", [])
                    if steps and max(steps) >= last_before:
                        return time.monotonic() - opened
        raise RuntimeError("the stream ended")
    finally:
        stop.set()
        logger.join()
        run.finish()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", nargs="+", default=["sqlite"])
    parser.add_argument("--pg-url", default=PG_URL)
    parser.add_argument("--trials", type=int, default=12)
    args = parser.parse_args()
    print(f"a stream opens on an unfollowed run; {args.trials} trials per arm, milliseconds")
    print("| backend | agent | median | p90 | worst |")
    print("|---|---|---:|---:|---:|")
    for backend in args.backends:
        with tempfile.TemporaryDirectory() as scratch:
            db = f"sqlite:///{scratch}/bench.db" if backend == "sqlite" else args.pg_url
            server = start_trickscope(db)
            try:
                seconds: dict[str, list[float]] = {arm: [] for arm in ARMS}
                for index in range(args.trials * len(ARMS)):
                    arm = ARMS[index % len(ARMS)]
                    journal = Path(scratch) / "journal"
                    seconds[arm].append(trial(server.url, journal, waits=arm == ARMS[0]))
            finally:
                server.stop()
        for arm in ARMS:
            ms = sorted(1000 * s for s in seconds[arm])
            p90 = ms[min(len(ms) - 1, round(0.9 * (len(ms) - 1)))]
            print(f"| {backend} | {arm} | {statistics.median(ms):.0f} | {p90:.0f} | {ms[-1]:.0f} |")


if __name__ == "__main__":
    main()
