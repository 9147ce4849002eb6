"""Checks shared by the batch parsers: error locations, packed columns and storable names."""

from __future__ import annotations

import binascii
from typing import Any

import pybase64

from trickscope_server.errors import InvalidPayloadError
from trickscope_server.services.limits import unstorable_text


def fail(loc: list[str | int], msg: str) -> InvalidPayloadError:
    """A 422 problem naming where in the body (``loc``) and what is wrong."""
    where = ".".join(str(part) for part in loc)
    return InvalidPayloadError(f"{where}: {msg}", errors=[{"loc": loc, "msg": msg}])


def b64decode(text: str) -> bytes:
    """Strict base64, as ``binascii.a2b_base64(text, strict_mode=True)`` takes and refuses it.

    The columns of a statistics flush are ~0.5 MB of base64 a request, which ``pybase64``
    decodes with SIMD. What it refuses is decoded again by ``binascii``, whose errors say what
    is wrong (``Incorrect padding``) and which also takes the excess padding ``pybase64``
    refuses.
    """
    try:
        return pybase64.b64decode(text, validate=True)
    except ValueError:
        return binascii.a2b_base64(text, strict_mode=True)


def column(text: Any, loc: list[str | int], name: str) -> bytes:
    """A packed column: base64 of whole little-endian 8-byte values."""
    if not isinstance(text, str):
        raise fail(loc, f"series {name!r}: must be a base64 string, got {type(text).__name__}")
    try:
        raw = b64decode(text)
    except (binascii.Error, ValueError) as exc:
        raise fail(loc, f"series {name!r}: not valid base64 ({exc})") from None
    if len(raw) % 8:
        raise fail(loc, f"series {name!r}: {len(raw)} bytes is not a multiple of 8")
    return raw


# Names that passed :func:`unstorable_text`: a run sends the same thousands of per-layer names in
# every batch, and the check is a regular-expression scan of each. Cleared when full.
STORABLE_NAMES: set[str] = set()
STORABLE_NAMES_MAX = 1 << 16


def checked_name(value: Any, loc: list[str | int], max_chars: int) -> str:
    """A series or histogram name: 1 to ``max_chars`` characters a back end can store."""
    if not isinstance(value, str) or not 0 < len(value) <= max_chars:
        raise fail(loc, f"must be a string of 1 to {max_chars} characters")
    if value in STORABLE_NAMES:
        return value
    reason = unstorable_text(value)
    if reason is not None:
        raise fail(loc, reason)
    if len(STORABLE_NAMES) >= STORABLE_NAMES_MAX:
        STORABLE_NAMES.clear()
    STORABLE_NAMES.add(value)
    return value
