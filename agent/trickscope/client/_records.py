"""A stored run as the client sees it, and lists of them read page by page."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

from trickscope.client import _history
from trickscope.client._findings import Finding
from trickscope.client._frames import history_table, runs_table, want_frame
from trickscope.client._http import path_of
from trickscope.client._series import Columns, SeriesSummary, is_layer_series
from trickscope.client._values import to_datetime, to_float

if TYPE_CHECKING:
    from trickscope.client.api import Api

ExportFormat = Literal["parquet", "csv"]


class RunRecord:
    """A run stored on the server: its metadata, and methods that read its data.

    Not the training-side :class:`trickscope.Run`: this one only reads. Its fields are a
    snapshot taken when it was fetched (``api.run(id)`` fetches a fresh one).

    Attributes:
        id, name, project, status: As the runs page shows them; ``status`` is running,
            finished, failed or crashed (a running run the server has not heard from lately).
        config: The hyperparameters, as logged (nested dicts stay nested).
        tags: The run's tags.
        latest: The last value of each run-level series, NaN and ±Inf as floats.
        last_step: The largest last step of the run-level series (None: nothing logged, or a
            server that does not say).
        summary: ``{series: (min, max)}`` over each run-level series' finite values.
        created_at, started_at, ended_at, last_seen_at: Aware UTC datetimes (None if unknown).
        system, setup, layers: What the agent saw of the host, the training setup and the
            model's parameter names.
        data: The server's whole answer (``GET /api/v1/runs/{id}``).
    """

    def __init__(self, api: Api, data: dict[str, Any]) -> None:
        self._api = api
        self.data = data
        self.id: str = data["id"]
        self.name: str = data.get("name") or self.id
        self.project: str = data.get("project", "")
        self.status: str = data.get("status", "")
        self.config: dict[str, Any] = data.get("config") or {}
        self.tags: list[str] = list(data.get("tags") or [])
        self.system: dict[str, Any] = data.get("system") or {}
        self.setup: dict[str, Any] = data.get("setup") or {}
        self.layers: list[str] = list(data.get("layers") or [])
        self.latest: dict[str, float | None] = {
            name: to_float(value) for name, value in (data.get("latest") or {}).items()
        }
        self.last_step: int | None = data.get("last_step")
        self.summary: dict[str, tuple[float | None, float | None]] = {
            name: (to_float(r.get("min")), to_float(r.get("max")))
            for name, r in (data.get("summary") or {}).items()
        }
        self.created_at: datetime | None = to_datetime(data.get("created_at"))
        self.started_at: datetime | None = to_datetime(data.get("started_at"))
        self.ended_at: datetime | None = to_datetime(data.get("ended_at"))
        self.updated_at: datetime | None = to_datetime(data.get("updated_at"))
        self.last_seen_at: datetime | None = to_datetime(data.get("last_seen_at"))

    def __repr__(self) -> str:
        return f"RunRecord(id={self.id!r}, name={self.name!r}, status={self.status!r})"

    @property
    def duration(self) -> float | None:
        """Seconds from start to end; for a run not ended, to the last request it sent."""
        start = self.started_at or self.created_at
        end = self.ended_at or self.last_seen_at or self.updated_at
        if start is None or end is None:
            return None
        return max(0.0, (end - start).total_seconds())

    def series(self) -> list[SeriesSummary]:
        """Every series of the run (per-layer ones included) with its summary, by name."""
        body = self._api._http.get_json(path_of("runs", self.id, "series"))
        return [SeriesSummary.from_json(s) for s in body["series"]]

    def findings(self) -> list[Finding]:
        """The run's health findings, most severe first (``GET /runs/{id}/health``)."""
        body = self._api._http.get_json(path_of("runs", self.id, "health"))
        return [Finding.from_json(f) for f in body.get("findings") or []]

    def history(
        self,
        names: str | Sequence[str] | None = None,
        points: int | None = None,
        start: int | None = None,
        end: int | None = None,
        wall_time: bool = False,
        as_frame: bool | None = None,
        source: _history.Source = "auto",
    ) -> Any:
        """Series of the run, one column per name, one row per step.

        Args:
            names: A series name or several (``"loss/train"``, ``["loss/train", "lr/group0"]``);
                None: every run-level series (the per-layer statistics left out).
            points: None for every point, exactly as logged (NaN and ±Inf included); a number
                for at most that many points per series, downsampled on the server with the
                extremes kept (what the charts draw).
            start, end: Only steps in ``[start, end]`` (inclusive).
            wall_time: Also a ``"<name>:wall_time"`` column per series: Unix seconds of each
                point.
            as_frame: True: a pandas DataFrame (ImportError without pandas); False: a dict of
                columns ``{"step": [...], name: [...]}``; None (default): a DataFrame when
                pandas is installed, else the dict.
            source: Where every point is read from: ``"json"`` (the points endpoint, in exact
                pages), ``"parquet"`` (the run's Parquet export) or ``"auto"``: Parquet when
                the names hold a large share of the run's points, else JSON.

        Returns:
            A DataFrame indexed by ``step`` (int64) with float64 columns; a step a series did
            not log is NaN there. The dict form has the same columns as lists, None where a
            series has no point.

        Raises:
            KeyError: the run has no series of one of the names.
            ApiError: the server refused a request.
        """
        if points is not None and points < 3:
            raise ValueError(f"points={points} must be at least 3 (or None for every point)")
        frame = want_frame(as_frame)
        every = {s.name: s for s in self.series()}
        if names is None:
            layers = set(self.layers)
            names = [n for n in every if not is_layer_series(n, layers)]
        wanted = [names] if isinstance(names, str) else list(dict.fromkeys(names))
        missing = [n for n in wanted if n not in every]
        if missing:
            raise KeyError(
                f"run {self.id} has no series {', '.join(map(repr, missing))}; "
                f"RunRecord.series() lists its {len(every)} series"
            )
        summaries = [every[n] for n in wanted]
        chosen = _history.choose_source(
            source,
            summaries,
            list(every.values()),
            points=points,
            start=start,
            end=end,
            wall_time=wall_time,
        )
        columns: dict[str, Columns]
        if chosen == "parquet":
            columns = _history.read_parquet(self._api._http, self.id, wanted, start, end, wall_time)
        else:
            reader = _history.PointReader(self._api._http, self.id, self._api.page_points)
            if points is None:
                columns = {s.name: reader.exact(s, start, end, wall_time) for s in summaries}
            else:
                columns = {n: reader.downsampled(n, points, start, end, wall_time) for n in wanted}
            self._api.page_points = reader.page_points  # remember a smaller server cap
        return history_table(columns, wall_time=wall_time, as_frame=frame)

    def export(
        self,
        path: str | os.PathLike[str],
        format: ExportFormat = "parquet",
        progress: Callable[[int, int | None], None] | None = None,
    ) -> Path:
        """Stream every point of the run to ``path`` (the server's export, unchanged).

        Parquet and CSV both hold the columns ``series, step, value, wall_time``. The file
        appears only once complete: the download goes to ``<path>.part`` first.

        Args:
            path: The file to write.
            format: ``"parquet"`` or ``"csv"``.
            progress: Called with the bytes of each piece written and the expected total (None
                when the server does not say).

        Returns:
            The path written.
        """
        if format not in ("parquet", "csv"):
            raise ValueError(f"format={format!r} must be 'parquet' or 'csv'")
        target = Path(path)
        partial = target.with_name(target.name + ".part")
        try:
            with partial.open("wb") as file:
                for total, piece in self._api._http.stream(
                    path_of("runs", self.id, f"export.{format}")
                ):
                    file.write(piece)
                    if progress is not None:
                        progress(len(piece), total)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        return target


class RunList(Sequence[RunRecord]):
    """Runs of a listing, fetched a page at a time as they are used.

    Iterating fetches the next page only when the previous one is used up, so breaking out
    early costs only the pages read. ``len()``, indexing from the end and :meth:`to_frame`
    fetch every page (up to the listing's ``limit``).
    """

    def __init__(self, api: Api, params: dict[str, Any], limit: int | None, page_size: int) -> None:
        self._api = api
        self._params = params
        self._limit = limit
        self._page_size = page_size
        self._runs: list[RunRecord] = []
        self._cursor: str | None = None
        self._done = limit == 0

    def _fetch_page(self) -> None:
        want = self._page_size
        if self._limit is not None:
            want = min(want, self._limit - len(self._runs))
        params = {**self._params, "limit": want, "cursor": self._cursor}
        body = self._api._http.get_json("/runs", params)
        self._runs.extend(RunRecord(self._api, r) for r in body["runs"])
        self._cursor = body.get("next_cursor")
        full = self._limit is not None and len(self._runs) >= self._limit
        self._done = self._cursor is None or full or not body["runs"]

    def _fetch_all(self) -> None:
        while not self._done:
            self._fetch_page()

    def __iter__(self) -> Iterator[RunRecord]:
        i = 0
        while True:
            while i < len(self._runs):
                yield self._runs[i]
                i += 1
            if self._done:
                return
            self._fetch_page()

    def __len__(self) -> int:
        self._fetch_all()
        return len(self._runs)

    @overload
    def __getitem__(self, index: int) -> RunRecord: ...

    @overload
    def __getitem__(self, index: slice) -> list[RunRecord]: ...

    def __getitem__(self, index: int | slice) -> RunRecord | list[RunRecord]:
        if isinstance(index, slice) or index < 0:
            self._fetch_all()
        else:
            while index >= len(self._runs) and not self._done:
                self._fetch_page()
        return self._runs[index]

    @property
    def has_more(self) -> bool:
        """Whether the server holds more matching runs than this listing will fetch (its
        ``limit`` cut it), once every page up to the limit has been read."""
        self._fetch_all()
        return self._cursor is not None

    def __repr__(self) -> str:
        more = "" if self._done else ", more on the server"
        return f"RunList({len(self._runs)} fetched{more})"

    def to_frame(self, as_frame: bool | None = True) -> Any:
        """Every run as one row: ``id`` (the index), name, project, status, tags, times,
        ``duration_s``, ``last_step``, then ``config.<dotted.key>`` and ``latest.<series>`` columns.

        Args:
            as_frame: True (default): a DataFrame (ImportError without pandas); False or None
                without pandas: a list of dicts, one per run.
        """
        return runs_table(self, as_frame=want_frame(as_frame))
