"""Packed numeric columns: base64 of little-endian int64 / float64 arrays.

Plain JSON cannot carry NaN or ±Inf, and parsing a million JSON numbers costs more than the rest
of ingest together. IEEE-754 bytes carry every float exactly, non-finite ones included, and the
server turns them into arrays with one ``numpy.frombuffer``.
"""

from __future__ import annotations

import base64
import math
import sys
from array import array
from collections.abc import Iterable, Sequence

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


def _unpack(typecode: str, text: str) -> array:
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


def encode_f64_le(raw: bytes | memoryview) -> str:
    """Pack float64 values given as their little-endian bytes (what :func:`encode_f64` makes of
    the same values): for callers that hold them in a buffer already."""
    if len(raw) % 8:
        raise ValueError(f"{len(raw)} bytes are not a whole number of float64 values")
    return base64.b64encode(raw).decode("ascii")


def decode_f64(text: str) -> array:
    """Inverse of :func:`encode_f64`; raises ``ValueError`` on malformed input."""
    return _unpack("d", text)


def encode_i64(values: Iterable[int]) -> str:
    """Pack integers as base64 of little-endian int64."""
    return _pack("q", values)


def decode_i64(text: str) -> array:
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
