"""Point ingest: body decoding and validation, then one transaction per batch.

The body is parsed here with orjson rather than by the web framework: validating a million-point
body through pydantic costs more than storing it. Columns are decoded with one ``frombuffer`` each
and stored as the very bytes that arrived, so there is no per-point Python work.
"""

from __future__ import annotations

import base64
import binascii
import time
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from trickscope_server.errors import (
    InvalidPayloadError,
    PayloadTooLargeError,
    UnsupportedEncodingError,
)
from trickscope_server.services._convert import F64, I64
from trickscope_server.services.runs import check_wire_version, require_run
from trickscope_server.storage import Database
from trickscope_server.storage import points as store

_MAX_BATCH_ID = 128
_MAX_NAME = 512


@dataclass(frozen=True)
class DecodedSeries:
    """One series of a batch: raw little-endian bytes plus their array views."""

    name: str
    steps_raw: bytes
    values_raw: bytes
    times_raw: bytes
    steps: NDArray[np.int64]
    values: NDArray[np.float64]


@dataclass(frozen=True)
class DecodedBatch:
    """A validated point batch."""

    batch_id: str
    series: list[DecodedSeries]
    points: int


def decompress(body: bytes, *, encoding: str | None, max_bytes: int) -> bytes:
    """The body after ``Content-Encoding`` (identity or gzip), never larger than ``max_bytes``."""
    encoding = (encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding not in ("gzip", "x-gzip"):
        raise UnsupportedEncodingError(
            f"Content-Encoding {encoding!r} is not supported: send identity or gzip"
        )
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        # max_length caps the output, so a small "zip bomb" cannot exhaust memory.
        out = inflater.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise InvalidPayloadError(f"body is not valid gzip: {exc}") from None
    if len(out) > max_bytes or inflater.unconsumed_tail:
        raise PayloadTooLargeError(
            f"decompressed body is larger than the server's limit of {max_bytes} bytes "
            "(TRICKSCOPE_MAX_BODY_BYTES): send smaller batches"
        )
    if not inflater.eof:
        raise InvalidPayloadError("body is truncated gzip")
    return out


def _fail(loc: list[str | int], msg: str) -> InvalidPayloadError:
    where = ".".join(str(part) for part in loc)
    return InvalidPayloadError(f"{where}: {msg}", errors=[{"loc": loc, "msg": msg}])


def _column(text: Any, loc: list[str | int], name: str) -> bytes:
    if not isinstance(text, str):
        raise _fail(loc, f"series {name!r}: must be a base64 string, got {type(text).__name__}")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _fail(loc, f"series {name!r}: not valid base64 ({exc})") from None
    if len(raw) % 8:
        raise _fail(loc, f"series {name!r}: {len(raw)} bytes is not a multiple of 8")
    return raw


def parse_batch(body: bytes, *, max_points: int) -> DecodedBatch:
    """Validate a ``PointBatch`` JSON body and decode its columns."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidPayloadError(f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _fail(["body"], f"must be a JSON object, got {type(data).__name__}")
    check_wire_version(data.get("wire_version", 1))
    batch_id = data.get("batch_id")
    if not isinstance(batch_id, str) or not 0 < len(batch_id) <= _MAX_BATCH_ID:
        raise _fail(["body", "batch_id"], f"must be a string of 1 to {_MAX_BATCH_ID} characters")
    raw_series = data.get("series")
    if not isinstance(raw_series, list):
        raise _fail(["body", "series"], "must be a list of series columns")
    decoded: list[DecodedSeries] = []
    points = 0
    for i, item in enumerate(raw_series):
        loc: list[str | int] = ["body", "series", i]
        if not isinstance(item, dict):
            raise _fail(loc, f"must be an object, got {type(item).__name__}")
        name = item.get("name")
        if not isinstance(name, str) or not 0 < len(name) <= _MAX_NAME:
            raise _fail([*loc, "name"], f"must be a string of 1 to {_MAX_NAME} characters")
        steps = _column(item.get("steps"), [*loc, "steps"], name)
        values = _column(item.get("values"), [*loc, "values"], name)
        times = _column(item.get("times"), [*loc, "times"], name)
        if not len(steps) == len(values) == len(times):
            raise _fail(
                loc,
                f"series {name!r}: columns differ in length (steps {len(steps) // 8}, "
                f"values {len(values) // 8}, times {len(times) // 8})",
            )
        points += len(steps) // 8
        if points > max_points:
            raise PayloadTooLargeError(
                f"batch holds more than the server's limit of {max_points} points "
                "(TRICKSCOPE_MAX_BATCH_POINTS): send smaller batches"
            )
        decoded.append(
            DecodedSeries(
                name=name,
                steps_raw=steps,
                values_raw=values,
                times_raw=times,
                steps=np.frombuffer(steps, dtype=I64),
                values=np.frombuffer(values, dtype=F64),
            )
        )
    return DecodedBatch(batch_id=batch_id, series=decoded, points=points)


def _summaries(
    series: DecodedSeries, run_id: str, series_id: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    steps, values = series.steps, series.values
    finite = np.isfinite(values)
    has_finite = bool(finite.any())
    vmin = float(values[finite].min()) if has_finite else None
    vmax = float(values[finite].max()) if has_finite else None
    nonfinite_steps = steps[~finite]
    # The last value is the one at the highest step; of equal steps, the later position wins.
    last = steps.size - 1 - int(np.argmax(steps[::-1]))
    step_min, step_max = int(steps.min()), int(steps.max())
    chunk = {
        "run_id": run_id,
        "series_id": series_id,
        "step_min": step_min,
        "step_max": step_max,
        "count": int(steps.size),
        "vmin": vmin,
        "vmax": vmax,
        "steps": series.steps_raw,
        "values": series.values_raw,
        "times": series.times_raw,
    }
    summary = {
        "b_id": series_id,
        "b_count": int(steps.size),
        "b_first": step_min,
        "b_last": step_max,
        "b_last_value": float(values[last]),
        "b_min": vmin,
        "b_max": vmax,
        "b_nonfinite": int(nonfinite_steps.min()) if nonfinite_steps.size else None,
    }
    return chunk, summary


def ingest_batch(db: Database, *, run_id: str, batch: DecodedBatch) -> tuple[int, bool]:
    """Store a batch in one transaction; returns (points accepted, whether it was a duplicate).

    A batch id the run has already seen changes nothing, which makes agent retries and journal
    replays safe.
    """
    now = time.time()
    with db.transaction() as session:
        require_run(session, run_id)
        if not store.record_batch(
            session, run_id=run_id, batch_id=batch.batch_id, points=batch.points, now=now
        ):
            return 0, True
        nonempty = [s for s in batch.series if s.steps.size]
        ids = store.ensure_series(session, run_id=run_id, names=[s.name for s in nonempty])
        chunks, summaries = [], []
        for s in nonempty:
            chunk, summary = _summaries(s, run_id, ids[s.name])
            chunks.append(chunk)
            summaries.append(summary)
        store.insert_chunks(session, chunks)
        store.update_summaries(session, summaries)
        store.touch_run(session, run_id=run_id, now=now)
    return batch.points, False
