"""Imported runs, sent to a server the way the agent sends its own runs.

``PUT /runs/{id}`` (project, name, config, tags, start time), point batches in the wire format
(packed int64/float64 columns, so NaN and ±Inf arrive exactly) and ``POST /runs/{id}/finish``.

Importing the same logs twice stores every point once: the run id comes from the logs themselves
(:func:`~trickscope_cli.importers.runs.run_id`), and each batch's id is a hash of the run id and
the batch's content, so the server skips a batch it already holds (its ``batch_id`` rule). Logs
that grew since the last import go to the same run; the batches that changed are stored again
and the points they repeat are de-duplicated when read (the later write wins).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from trickscope_cli.importers.histograms import to_bins
from trickscope_cli.importers.runs import ImportedRun
from trickscope_wire import (
    HistogramColumns,
    PointBatch,
    RunCreate,
    RunFinish,
    SeriesColumns,
    dumps,
)

BATCH_CELLS = 50_000
"""Points and histogram bins per request: the agent's batch size, far inside the server's
``TRICKSCOPE_MAX_BATCH_POINTS`` and body limits."""

RETRIES = 3


def _packed(values: ArrayLike, dtype: str) -> str:
    """A column as the wire's base64 of little-endian int64 or float64."""
    return base64.b64encode(np.ascontiguousarray(values, dtype=dtype).tobytes()).decode("ascii")


@dataclass
class _Pending:
    series: list[SeriesColumns]
    histograms: list[HistogramColumns]
    cells: int = 0  # points and bins: what the server's batch limit counts
    items: int = 0  # points and histograms: what the progress bar counts


def point_batches(
    run: ImportedRun, run_id: str, limit: int = BATCH_CELLS
) -> Iterator[tuple[bytes, int]]:
    """The run's scalars and histograms as ``PointBatch`` bodies of at most ``limit`` points
    and bins each, with the number of points and histograms in each; the same run always gives
    the same bodies."""
    pending = _Pending([], [])

    def flush() -> tuple[bytes, int]:
        unnamed = dumps(
            PointBatch(batch_id="", series=pending.series, histograms=pending.histograms)
        )
        batch_id = hashlib.sha256(run_id.encode() + b"\0" + unnamed).hexdigest()[:40]
        body = dumps(PointBatch(batch_id, pending.series, pending.histograms))
        items = pending.items
        pending.series, pending.histograms, pending.cells, pending.items = [], [], 0, 0
        return body, items

    for name in sorted(run.scalars):
        series = run.scalars[name]
        start = 0
        while start < len(series):  # each batch filled up, a series split where it must be
            if pending.cells >= limit:
                yield flush()
            end = min(len(series), start + limit - pending.cells)
            pending.series.append(
                SeriesColumns(
                    name=name,
                    steps=_packed(series.steps[start:end], "<i8"),
                    values=_packed(series.values[start:end], "<f8"),
                    times=_packed(series.times[start:end], "<f8"),
                )
            )
            pending.cells += end - start
            pending.items += end - start
            start = end
    for name in sorted(run.histograms):
        binned = to_bins(run.histograms[name])
        start = 0
        while start < len(binned.steps):
            room = (limit - pending.cells) // binned.bins
            if room < 1 and pending.cells:
                yield flush()
                room = limit // binned.bins
            end = min(len(binned.steps), start + max(1, room))
            pending.histograms.append(
                HistogramColumns(
                    name=name,
                    bins=binned.bins,
                    steps=_packed(binned.steps[start:end], "<i8"),
                    lo=_packed(binned.lo[start:end], "<f8"),
                    hi=_packed(binned.hi[start:end], "<f8"),
                    counts=_packed(binned.counts[start:end].ravel(), "<f8"),
                    nonfinite=_packed(np.zeros(end - start), "<f8"),
                    times=_packed(binned.times[start:end], "<f8"),
                )
            )
            pending.cells += (end - start) * binned.bins
            pending.items += end - start
            start = end
    if pending.cells:
        yield flush()


class Uploader:
    """One keep-alive connection to the server, for any number of imported runs."""

    def __init__(self, url: str, token: str | None, timeout: float = 60.0) -> None:
        # The agent's transport is standard library only (no torch): requests that retry on
        # outages, gzip bodies and the server's problem details in errors.
        from trickscope.transport import Connection

        self.url = url.rstrip("/")
        self.connection = Connection(self.url, timeout=timeout, token=token)

    def check(self) -> None:
        """Ask the server for one run: fails (``ConnectionError``) before any log is read when
        the server is not there or refuses the token."""
        self.connection.send_with_retries("GET", "/api/v1/runs?limit=1", b"", RETRIES)

    def upload(
        self,
        run: ImportedRun,
        *,
        run_id: str,
        project: str,
        name: str,
        tags: list[str],
        on_sent: Callable[[int], Any] = lambda n: None,
    ) -> int:
        """Create or update the run, send its points, finish it; returns the requests sent.
        ``on_sent`` is told the points and histograms of each batch the server acknowledged."""
        send = self.connection.send_with_retries
        create = RunCreate(
            project=project,
            name=name,
            config=run.config,
            tags=tags,
            system=run.system,
            started_at=run.started_at,
        )
        send("PUT", f"/api/v1/runs/{run_id}", dumps(create), RETRIES)
        requests = 1
        for body, items in point_batches(run, run_id):
            send("POST", f"/api/v1/runs/{run_id}/points", body, RETRIES)
            on_sent(items)
            requests += 1
        finish = RunFinish(status="finished", ended_at=run.ended_at)
        send("POST", f"/api/v1/runs/{run_id}/finish", dumps(finish), RETRIES)
        return requests + 1

    def close(self) -> None:
        self.connection.close()
