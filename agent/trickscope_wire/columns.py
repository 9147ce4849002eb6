"""Packed numeric columns: base64 of little-endian int64 / float64 arrays.

Plain JSON cannot carry NaN or ±Inf, and parsing a million JSON numbers costs more than the rest
of ingest together. IEEE-754 bytes carry every float exactly, non-finite ones included, and the
server turns them into arrays with one ``numpy.frombuffer``.
"""

from __future__ import annotations

import base64
import binascii
import math
import sys
from array import array
from collections.abc import Iterable, Sequence
from typing import Any

_LITTLE = sys.byteorder == "little"

# Tokens used where a human-readable JSON column (REST reads, CSV) must show a non-finite float.
NAN_TOKEN = "NaN"
POS_INF_TOKEN = "Infinity"
NEG_INF_TOKEN = "-Infinity"
_TOKENS = {NAN_TOKEN: math.nan, POS_INF_TOKEN: math.inf, NEG_INF_TOKEN: -math.inf}


def _pack(typecode: str, values: Iterable[float] | Iterable[int]) -> str:
    packed = array(typecode, values)
    if not _LITTLE:
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode("ascii")


def _unpack(typecode: str, text: str) -> array[Any]:
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError as exc:
        raise ValueError(f"column is not valid base64: {exc}") from None
    packed = array(typecode)
    if len(raw) % packed.itemsize:
        raise ValueError(
            f"column holds {len(raw)} bytes, not a multiple of {packed.itemsize} ({typecode!r})"
        )
    packed.frombytes(raw)
    if not _LITTLE:
        packed.byteswap()
    return packed


def encode_f64(values: Iterable[float]) -> str:
    """Pack floats (NaN and ±Inf included) as base64 of little-endian float64."""
    return _pack("d", values)


def encode_f64_rows(raw: bytes, row_bytes: int) -> list[str]:
    """Pack consecutive rows of little-endian float64 bytes, ``row_bytes`` each, as one column
    per row: what :func:`encode_f64` makes of each row's values, for callers that hold them in
    a buffer already (one call for thousands of columns)."""
    if row_bytes <= 0 or row_bytes % 8 or len(raw) % row_bytes:
        raise ValueError(f"{len(raw)} bytes are not whole rows of {row_bytes} float64 bytes")
    view, encode = memoryview(raw), binascii.b2a_base64
    return [
        encode(view[start : start + row_bytes], newline=False).decode("ascii")
        for start in range(0, len(raw), row_bytes)
    ]


def decode_f64(text: str) -> array[float]:
    """Inverse of :func:`encode_f64`; raises ``ValueError`` on malformed input."""
    return _unpack("d", text)


def encode_i64(values: Iterable[int]) -> str:
    """Pack integers as base64 of little-endian int64."""
    return _pack("q", values)


def decode_i64(text: str) -> array[int]:
    """Inverse of :func:`encode_i64`; raises ``ValueError`` on malformed input."""
    return _unpack("q", text)


def finite_or_token(value: float) -> float | str:
    """A JSON-safe form of ``value``: itself, or ``"NaN"``/``"Infinity"``/``"-Infinity"``."""
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return NAN_TOKEN
    return POS_INF_TOKEN if value > 0 else NEG_INF_TOKEN


def token_to_float(value: float | int | str) -> float:
    """Inverse of :func:`finite_or_token`; raises ``ValueError`` for any other string."""
    if isinstance(value, str):
        try:
            return _TOKENS[value]
        except KeyError:
            raise ValueError(
                f"{value!r} is not a number; non-finite values are written "
                f"{NAN_TOKEN!r}, {POS_INF_TOKEN!r} or {NEG_INF_TOKEN!r}"
            ) from None
    return float(value)


def tokens(values: Sequence[float]) -> list[float | str]:
    """Map :func:`finite_or_token` over a column."""
    return [finite_or_token(v) for v in values]
