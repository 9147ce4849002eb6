"""Input limits: what the server refuses before anything is stored.

Every check raises a 422 problem whose ``errors[].loc`` names the offending field, so a client
(or a person reading the agent's log) knows what to change. The same rules hold on SQLite and
PostgreSQL: text a back end cannot store (NUL, lone surrogates) and numbers out of range are
refused up front rather than failing, or worse succeeding, differently on each.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from trickscope_server.errors import InvalidPayloadError
from trickscope_wire import limits as wire

INT64_MIN = wire.INT64_MIN
INT64_MAX = wire.INT64_MAX
# Unix seconds a datetime can show: 0 .. 9999-12-31T23:59:59.
UNIX_MIN = wire.UNIX_MIN
UNIX_MAX = wire.UNIX_MAX
# Any JSON body deeper than this is refused before its fields are looked at: it bounds the
# recursion of every later step (validation, storage, the JSON encoders of the responses).
MAX_BODY_DEPTH = 64

# NUL (PostgreSQL text cannot hold it) and UTF-16 surrogates (no UTF-8 encoding exists for them;
# a well-formed pair is decoded to one code point by every JSON parser, so any left is lone).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")

Loc = list[str | int]


@dataclass(frozen=True)
class Limits:
    """The limits of one server, from its settings (``TRICKSCOPE_MAX_*``)."""

    json_depth: int = wire.MAX_JSON_DEPTH
    config_bytes: int = wire.MAX_DOCUMENT_BYTES
    tags: int = wire.MAX_TAGS
    tag_chars: int = wire.MAX_TAG_CHARS
    name_chars: int = wire.MAX_NAME_CHARS
    series_name_chars: int = wire.MAX_SERIES_NAME_CHARS
    layers: int = wire.MAX_LAYERS

    @classmethod
    def of(cls, settings: Any) -> Limits:
        """The limits named by ``settings`` (a :class:`~trickscope_server.config.Settings`)."""
        return cls(
            json_depth=settings.max_json_depth,
            config_bytes=settings.max_config_bytes,
            tags=settings.max_tags,
            tag_chars=settings.max_tag_chars,
            name_chars=settings.max_name_chars,
            series_name_chars=settings.max_series_name_chars,
            layers=settings.max_layers,
        )


def invalid(loc: Loc, msg: str, detail: str | None = None) -> InvalidPayloadError:
    """A 422 problem naming ``loc`` (``["body", "config", "lr"]``, ``["query", "name"]``)."""
    return InvalidPayloadError(detail or f"{_where(loc)} {msg}", errors=[{"loc": loc, "msg": msg}])


def _where(loc: Loc) -> str:
    """``["body", "series", 0, "name"]`` as ``series[0].name``; query and path parameters and
    headers as ``query parameter name``."""
    kind, *rest = loc or ["body"]
    text = ""
    for part in rest:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    if kind == "body":
        return text or "body"
    return f"{kind} parameter {text}" if kind in ("query", "path") else f"{kind} {text}"


def unstorable_text(text: str) -> str | None:
    """Why ``text`` cannot be stored (NUL or a lone surrogate), or None when it can."""
    found = _UNSTORABLE.search(text)
    if found is None:
        return None
    if found.group() == "\x00":
        return f"must not contain NUL (U+0000), found at character {found.start()}"
    return (
        f"must not contain a lone surrogate (U+{ord(found.group()):04X}), "
        f"found at character {found.start()}"
    )


def check_text(loc: Loc, value: object, *, max_chars: int, allow_empty: bool = False) -> str:
    """``value`` as a storable string of at most ``max_chars`` characters (1 unless empty ok)."""
    if not isinstance(value, str):
        raise invalid(loc, "must be a string")
    if (not value and not allow_empty) or len(value) > max_chars:
        low = 0 if allow_empty else 1
        raise invalid(loc, f"must be {low} to {max_chars} characters, got {len(value)}")
    reason = unstorable_text(value)
    if reason is not None:
        raise invalid(loc, reason)
    return value


def check_json_value(loc: Loc, value: Any, *, max_depth: int) -> None:
    """Refuse unstorable text (in keys too), non-finite numbers and nesting past ``max_depth``.

    Depth counts containers: ``{}`` and ``{"a": 1}`` are depth 1, ``{"a": {"b": 1}}`` depth 2.
    Iterative, so no input can exhaust the interpreter's stack.
    """
    stack: list[tuple[Loc, Any, int]] = [(loc, value, 0)]
    while stack:
        where, item, depth = stack.pop()
        if isinstance(item, str):
            reason = unstorable_text(item)
            if reason is not None:
                raise invalid(where, reason)
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise invalid(
                    where,
                    "must be a finite number: send non-finite values as the strings "
                    '"NaN", "Infinity" or "-Infinity"',
                )
        elif isinstance(item, dict | list):
            if depth + 1 > max_depth:
                raise invalid(where, f"nests deeper than the limit of {max_depth} levels")
            if isinstance(item, dict):
                for key, child in item.items():
                    if not isinstance(key, str):
                        raise invalid(where, "object keys must be strings")
                    reason = unstorable_text(key)
                    if reason is not None:
                        raise invalid([*where, key], f"key {reason}")
                    stack.append(([*where, key], child, depth + 1))
            else:
                stack.extend(([*where, i], child, depth + 1) for i, child in enumerate(item))
        elif item is not None and not isinstance(item, bool | int):
            raise invalid(where, f"must be a JSON value, got {type(item).__name__}")


def check_json_object(loc: Loc, value: object, *, limits: Limits, max_bytes: int | None) -> None:
    """A free-form JSON object field (config, system, setup, evidence) within the limits."""
    if not isinstance(value, dict):
        raise invalid(loc, "must be a JSON object")
    check_json_value(loc, value, max_depth=limits.json_depth)
    if max_bytes is not None:
        size = encoded_size(value)
        if size > max_bytes:
            raise invalid(loc, f"encodes to {size} bytes, over the limit of {max_bytes}")


def encoded_size(value: Any) -> int:
    """Bytes of ``value`` as compact JSON (integers past 64 bits included)."""
    try:
        return len(orjson.dumps(value))
    except orjson.JSONEncodeError:  # an integer orjson cannot encode: the slower encoder can
        return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def check_unix(loc: Loc, value: object) -> float | None:
    """Unix seconds a datetime can show (0 .. 253402300799), or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid(loc, "must be Unix seconds (a number)")
    if not (math.isfinite(value) and UNIX_MIN <= value <= UNIX_MAX):
        raise invalid(loc, f"must be Unix seconds from {UNIX_MIN:.0f} to {UNIX_MAX:.0f}")
    return float(value)


def check_int64(loc: Loc, value: object, *, low: int = INT64_MIN) -> int:
    """An integer within ``low`` .. int64's maximum."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= INT64_MAX:
        raise invalid(loc, f"must be an integer from {low} to {INT64_MAX}")
    return value


def check_names(loc: Loc, values: object, *, max_count: int, max_chars: int) -> list[str]:
    """A list of at most ``max_count`` storable non-empty strings of ``max_chars`` at most."""
    if not isinstance(values, list):
        raise invalid(loc, "must be a list of strings")
    if len(values) > max_count:
        raise invalid(loc, f"holds {len(values)} items, over the limit of {max_count}")
    return [check_text([*loc, i], v, max_chars=max_chars) for i, v in enumerate(values)]


def check_query_text(items: Iterable[tuple[str, str]], where: str) -> None:
    """Query parameters, path parameters or headers that hold unstorable text: 422."""
    for name, value in items:
        reason = unstorable_text(name) or unstorable_text(value)
        if reason is not None:
            raise invalid([where, name], reason)


def check_run_create(payload: Any, limits: Limits) -> None:
    """``PUT /runs/{id}``: names, tags, config and system, start time."""
    check_text(["body", "project"], payload.project, max_chars=limits.name_chars)
    check_text(["body", "name"], payload.name, max_chars=limits.name_chars, allow_empty=True)
    check_names(["body", "tags"], payload.tags, max_count=limits.tags, max_chars=limits.tag_chars)
    for field in ("config", "system"):
        value = getattr(payload, field)
        check_json_object(["body", field], value, limits=limits, max_bytes=limits.config_bytes)
    check_unix(["body", "started_at"], payload.started_at)


def check_layers(payload: Any, limits: Limits) -> None:
    """``PUT /runs/{id}/layers``: at most ``layers`` names of a series name's length."""
    check_names(
        ["body", "layers"],
        payload.layers,
        max_count=limits.layers,
        max_chars=limits.series_name_chars,
    )


def check_rank(payload: Any, limits: Limits) -> None:
    """``PUT /runs/{id}/ranks/{rank}``: the rank's system description."""
    check_json_object(
        ["body", "system"], payload.system, limits=limits, max_bytes=limits.config_bytes
    )


def check_setup(payload: Any, limits: Limits) -> None:
    """``PUT /runs/{id}/setup``: the setup document's depth (its size is checked on store)."""
    check_json_object(["body", "setup"], payload.setup, limits=limits, max_bytes=None)


def check_findings(payload: Any, limits: Limits) -> None:
    """``PUT /runs/{id}/findings``: each finding's evidence and text (sizes checked on store)."""
    if not isinstance(payload.findings, list):
        raise invalid(["body", "findings"], "must be a list of findings")
    for i, finding in enumerate(payload.findings):
        loc: Loc = ["body", "findings", i]
        check_json_object([*loc, "evidence"], finding.evidence, limits=limits, max_bytes=None)
        if finding.step is not None:
            check_int64([*loc, "step"], finding.step, low=0)


def check_finish(payload: Any) -> None:
    """``POST /runs/{id}/finish``: the end time."""
    check_unix(["body", "ended_at"], payload.ended_at)


def check_json_body(body: bytes) -> None:
    """A JSON body's text and numbers, wherever they are: storable strings and keys, finite
    numbers, at most :data:`MAX_BODY_DEPTH` levels. A body that is no JSON at all passes, for
    the route's own parsing to report."""
    if not body:
        return
    try:
        value = json.loads(body)
    except json.JSONDecodeError:
        return
    except UnicodeDecodeError as exc:
        raise invalid(["body"], f"must be UTF-8 JSON: {exc.reason} at byte {exc.start}") from None
    except RecursionError:
        raise invalid(["body"], f"nests deeper than the limit of {MAX_BODY_DEPTH} levels") from None
    check_json_value(["body"], value, max_depth=MAX_BODY_DEPTH)
