"""Full-history exports of a run, streamed: CSV (one series at a time) and Parquet (row groups).

Neither holds more than one series' points in memory: the run's series are read one after the
other, each deduplicated (later write wins) and sorted by step, then written out.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator

from trickscope_server.errors import ExportUnavailableError
from trickscope_server.services._series_read import Columns, series_columns
from trickscope_server.services.runs import require_run
from trickscope_server.storage import Database
from trickscope_server.storage import blocks as block_store
from trickscope_server.storage import points as store
from trickscope_server.storage.block_summaries import family_of

CSV_HEADER = "series,step,value,wall_time\r\n"
_ROWS_PER_PIECE = 8192


def _series_list(db: Database, run_id: str) -> tuple[int, list[tuple[int, str]]]:
    with db.reader() as session:
        require_run(session, run_id)
        cursor = store.run_seq(session, run_id=run_id)
        return cursor, store.series_ids_of_run(session, run_id=run_id)


class _SeriesReader:
    """Reads series one at a time, keeping the last family's blocks: the run's series come by
    name, so a family's members come one after the other and its blocks are read once."""

    def __init__(self, db: Database, run_id: str, cursor: int) -> None:
        self._db, self._run_id, self._cursor = db, run_id, cursor
        self._family: str | None = None
        self._blocks: list[block_store.Block] = []

    def columns(self, series_id: int, name: str) -> Columns:
        family = family_of(name)
        with self._db.reader() as session:
            if family is not None and family != self._family:
                self._family = family
                self._blocks = block_store.family_blocks(
                    session, run_id=self._run_id, family=family, cursor=self._cursor
                )
            return series_columns(
                session,
                run_id=self._run_id,
                series_id=series_id,
                name=name,
                cursor=self._cursor,
                blocks=self._blocks if family is not None else [],
            )


def _csv_float(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return repr(value)


def _csv_name(name: str) -> str:
    if any(ch in name for ch in ',"\r\n'):
        return '"' + name.replace('"', '""') + '"'
    return name


def export_csv(db: Database, *, run_id: str) -> Iterator[bytes]:
    """The run's points as CSV (``series,step,value,wall_time``), one piece at a time.

    Problems (an unknown run) are raised here, before the stream starts.
    """
    return _csv_pieces(db, run_id, *_series_list(db, run_id))


def _csv_pieces(
    db: Database, run_id: str, cursor: int, series: list[tuple[int, str]]
) -> Iterator[bytes]:
    yield CSV_HEADER.encode()
    reader = _SeriesReader(db, run_id, cursor)
    for series_id, name in series:
        steps, values, times = reader.columns(series_id, name)
        label = _csv_name(name)
        for start in range(0, steps.size, _ROWS_PER_PIECE):
            stop = start + _ROWS_PER_PIECE
            lines = [
                f"{label},{s},{_csv_float(v)},{_csv_float(t)}\r\n"
                for s, v, t in zip(
                    steps[start:stop].tolist(),
                    values[start:stop].tolist(),
                    times[start:stop].tolist(),
                    strict=True,
                )
            ]
            yield "".join(lines).encode()


class _Sink(io.RawIOBase):
    """A write-only file whose bytes are collected and handed out between row groups."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out


def export_parquet(db: Database, *, run_id: str) -> Iterator[bytes]:
    """The run's points as Parquet: the CSV's columns, one row group per series.

    Problems (an unknown run, pyarrow missing) are raised here, before the stream starts.
    """
    try:
        import pyarrow  # type: ignore[import-untyped]  # noqa: F401  (imported lazily: an optional dependency)
    except ImportError:  # pragma: no cover - depends on the installation
        raise ExportUnavailableError(
            "Parquet export needs pyarrow: pip install pyarrow (or use export.csv)"
        ) from None
    return _parquet_pieces(db, run_id, *_series_list(db, run_id))


def _parquet_pieces(
    db: Database, run_id: str, cursor: int, series: list[tuple[int, str]]
) -> Iterator[bytes]:
    import pyarrow as pa
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    schema = pa.schema(
        [
            ("series", pa.string()),
            ("step", pa.int64()),
            ("value", pa.float64()),
            ("wall_time", pa.float64()),
        ]
    )
    sink = _Sink()
    reader = _SeriesReader(db, run_id, cursor)
    writer = pq.ParquetWriter(pa.PythonFile(sink, mode="w"), schema)
    try:
        for series_id, name in series:
            steps, values, times = reader.columns(series_id, name)
            if not steps.size:
                continue
            table = pa.table(
                {
                    "series": pa.repeat(pa.scalar(name), steps.size),
                    "step": steps,
                    "value": values,
                    "wall_time": times,
                },
                schema=schema,
            )
            writer.write_table(table)
            piece = sink.take()
            if piece:
                yield piece
    finally:
        writer.close()
    yield sink.take()
