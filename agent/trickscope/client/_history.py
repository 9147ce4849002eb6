"""Reading series points: the JSON points endpoint, or the run's Parquet export.

Every point (``points=None``) comes from one of two places, whichever moves less:

* ``GET /runs/{id}/points`` in step windows small enough that the server answers them exactly
  (``downsampled: false``), one series at a time; cheap when the names asked for are a small
  part of the run (a run with hundreds of per-layer series);
* ``GET /runs/{id}/export.parquet``: the whole run in one binary download, read with pyarrow;
  several times faster per point, but it carries every series of the run.

A ``points`` budget always reads the JSON endpoint, downsampled on the server.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any, Literal

from trickscope.client._http import ApiError, Http, path_of
from trickscope.client._series import Columns, SeriesSummary
from trickscope.client._values import to_floats

Source = Literal["auto", "json", "parquet"]

# Parquet wins once the series asked for hold this share of the run's points. Measured on a
# loopback server: JSON pages cost about 0.5 s per million points asked for, the Parquet export
# about 0.19 s per million points of the whole run, so the two break even near 0.38. Wall times
# double JSON's cost and barely change Parquet's: there the break-even share halves. Small
# reads stay on JSON: a handful of requests either way.
PARQUET_MIN_SHARE = 0.4
PARQUET_MIN_SHARE_WITH_TIMES = 0.2
PARQUET_MIN_POINTS = 20_000


def has_pyarrow() -> bool:
    try:
        import pyarrow.parquet  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        return False
    return True


def choose_source(
    source: Source,
    wanted: Sequence[SeriesSummary],
    every: Sequence[SeriesSummary],
    *,
    points: int | None,
    start: int | None,
    end: int | None,
    wall_time: bool = False,
) -> Literal["json", "parquet"]:
    """Where to read from: what was asked, else the cheaper of the two for every point."""
    if source not in ("auto", "json", "parquet"):
        raise ValueError(f"source={source!r} must be 'auto', 'json' or 'parquet'")
    if source == "parquet" and points is not None:
        raise ValueError("source='parquet' reads every point: leave points=None")
    if source != "auto":
        return source
    if points is not None or not has_pyarrow():
        return "json"
    asked = sum(s.count_in(start, end) for s in wanted)
    total = sum(s.count for s in every)
    share = PARQUET_MIN_SHARE_WITH_TIMES if wall_time else PARQUET_MIN_SHARE
    if asked >= PARQUET_MIN_POINTS and asked >= share * total:
        return "parquet"
    return "json"


class PointReader:
    """Reads one run's series over the JSON endpoint, exactly or downsampled."""

    def __init__(self, http: Http, run_id: str, page_points: int) -> None:
        self._http = http
        self._path = path_of("runs", run_id, "points")
        self.page_points = page_points

    def _get(
        self, name: str, start: int | None, end: int | None, points: int, wall_time: bool
    ) -> dict[str, Any]:
        params = {"name": name, "start": start, "end": end, "points": points}
        if wall_time:
            params["wall_time"] = "true"
        return self._http.get_json(self._path, params)  # type: ignore[no-any-return]

    def downsampled(
        self, name: str, points: int, start: int | None, end: int | None, wall_time: bool
    ) -> Columns:
        """At most ``points`` points of the window, extremes kept (the server's budget)."""
        return _columns(self._get(name, start, end, points, wall_time), wall_time)

    def exact(
        self, summary: SeriesSummary, start: int | None, end: int | None, wall_time: bool
    ) -> Columns:
        """Every point of the window, in windows the server answers without downsampling."""
        steps: list[int] = []
        values: list[float] = []
        times: list[float] | None = [] if wall_time else None
        first, last = summary.first_step, summary.last_step
        if first is None or last is None:
            return Columns(steps, values, times)
        lo = first if start is None else max(start, first)
        hi = last if end is None else min(end, last)
        if hi < lo:
            return Columns(steps, values, times)
        # Windows sized from the summary, each holding about 80% of a page; a window that holds
        # more (points bunched up) is split again.
        parts = math.ceil(summary.count_in(lo, hi) / (0.8 * self.page_points))
        pending = _split(lo, hi, parts)[::-1]
        while pending:
            a, b = pending.pop()
            body = self._page(summary.name, a, b, wall_time)
            if body.get("downsampled") and b > a:  # one step is one point: it always fits
                total = int(body.get("total") or 0)
                pieces = max(2, math.ceil(total / (0.8 * self.page_points)))
                pending.extend(_split(a, b, pieces)[::-1])
                continue
            page = _columns(body, wall_time)
            steps += page.step
            values += page.value
            if times is not None and page.wall_time is not None:
                times += page.wall_time
        return Columns(steps, values, times)

    def _page(self, name: str, start: int, end: int, wall_time: bool) -> dict[str, Any]:
        while True:
            try:
                return self._get(name, start, end, self.page_points, wall_time)
            except ApiError as exc:
                # A server configured with a smaller point cap says so with a 422 on ``points``.
                too_many = exc.status == 422 and any(
                    (e.get("loc") or [None])[-1] == "points" for e in exc.errors
                )
                if not too_many or self.page_points <= 1000:
                    raise
                self.page_points //= 2


def _split(lo: int, hi: int, parts: int) -> list[tuple[int, int]]:
    """[lo, hi] cut into ``parts`` consecutive inclusive windows of about equal width."""
    parts = max(1, min(parts, hi - lo + 1))
    edges = [lo + (hi - lo + 1) * i // parts for i in range(parts + 1)]
    return [(edges[i], edges[i + 1] - 1) for i in range(parts)]


def _columns(body: dict[str, Any], wall_time: bool) -> Columns:
    times = body.get("wall_time")
    return Columns(
        list(body["step"]),
        to_floats(body["value"]),
        to_floats(times) if wall_time and times is not None else None,
    )


def read_parquet(
    http: Http,
    run_id: str,
    names: Sequence[str],
    start: int | None,
    end: int | None,
    wall_time: bool,
) -> dict[str, Columns]:
    """The named series from the run's Parquet export, as numpy columns sorted by step."""
    import numpy as np
    import pyarrow as pa  # type: ignore[import-untyped]
    import pyarrow.compute as pc  # type: ignore[import-untyped]
    import pyarrow.parquet as pq

    buffer = bytearray()
    for _, piece in http.stream(path_of("runs", run_id, "export.parquet")):
        buffer += piece
    parquet = pq.ParquetFile(io.BytesIO(buffer))
    # The export writes one row group per series: read only the groups of the series asked for
    # (a group whose statistics do not name a single series is read and filtered).
    wanted = set(names)
    groups = []
    for i in range(parquet.metadata.num_row_groups):
        stats = parquet.metadata.row_group(i).column(0).statistics
        single = stats is not None and stats.has_min_max and stats.min == stats.max
        if not single or stats.min in wanted:
            groups.append(i)
    columns = ["series", "step", "value"] + (["wall_time"] if wall_time else [])
    table = parquet.read_row_groups(groups, columns=columns) if groups else None
    out: dict[str, Columns] = {}
    for name in names:
        if table is None:
            part = pa.table({c: [] for c in columns})
        else:
            part = table.filter(pc.equal(table["series"], name))
        steps = part["step"].to_numpy().astype(np.int64, copy=False)
        keep = np.ones(steps.size, dtype=bool)
        if start is not None:
            keep &= steps >= start
        if end is not None:
            keep &= steps <= end
        out[name] = Columns(
            steps[keep],
            part["value"].to_numpy().astype(np.float64, copy=False)[keep],
            part["wall_time"].to_numpy().astype(np.float64, copy=False)[keep]
            if wall_time
            else None,
        )
    return out
